package auth

import (
	"context"
	"crypto"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Any header, cookie and query get 200, 401 or 403, never a panic, and a
// refusal's reason is a few fixed words.
func FuzzAuthorize(f *testing.F) {
	k := keys()
	a, err := New(Config{Secrets: [][]byte{k.secret}, PublicKeys: []crypto.PublicKey{&k.ec.PublicKey}, Audience: "esbridge"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(a.Close)
	exp := time.Now().Add(24 * time.Hour).Unix()
	valid := tok{jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"aud": "esbridge", "routes": "*", "exp": exp}}.sign(f)
	ec := tok{jwt.SigningMethodES256, k.ec, "k", jwt.MapClaims{"aud": "esbridge", "routes": []string{"/a"}, "exp": exp}}.sign(f)
	noExp := tok{jwt.SigningMethodHS256, k.secret, "", jwt.MapClaims{"aud": "esbridge", "routes": "*"}}.sign(f)
	f.Add("Bearer "+valid, "", "")
	f.Add("", ec, "")
	f.Add("", "", valid)
	f.Add("Bearer eyJhbGciOiJub25lIn0.e30.", "x", "%zz")
	f.Add("bearer  ", "\x00", "a.b.c")
	f.Add("Bearer "+valid[:len(valid)-3], "", "")
	f.Add("Bearer "+noExp, "", "")
	f.Fuzz(func(t *testing.T, authz, cookie, query string) {
		r := httptest.NewRequest(http.MethodGet, "/a", nil)
		r.URL.RawQuery = "access_token=" + query
		r.Header.Set("Authorization", authz)
		r.Header.Set("Cookie", DefaultCookie+"="+cookie)
		d := a.Authorize(context.Background(), r, "/a")
		switch d.Status {
		case 200, 401, 403:
		default:
			t.Fatalf("status %d", d.Status)
		}
		if d.Status != 200 && len(d.Reason) > 80 {
			t.Fatalf("reason %q: want a few words", d.Reason)
		}
	})
}
