package main

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/esbridge/esbridge/internal/progtest"
	"github.com/esbridge/esbridge/internal/tlstest"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// startProcEnv starts the race-enabled esbridge with args and the
// variables env ("NAME=value") added to the test's environment, without
// waiting for anything.
func startProcEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return &proc{progtest.Start(t, binary(t), args, progtest.Env(env...)), t}
}

// startBridgeEnv is startProcEnv, and waits until esbridge listens.
func startBridgeEnv(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	return &proc{progtest.Listen(t, binary(t), args, progtest.Env(env...)), t}
}

// A deployment configured by the environment alone: the listener, two
// routes in ESBRIDGE_ROUTE on lines of their own (as a ConfigMap or an
// EnvironmentFile carries them), two trusted proxies in one variable, a
// limit per client address and the log format.
func TestEnvConfiguresEverything(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	orders, ordersURL := ns.jetStream("ORDERS")
	payments, paymentsURL := ns.jetStream("PAYMENTS")
	payments.publish("p1", "p2")
	b := startBridgeEnv(t, []string{
		"ESBRIDGE_LISTEN=127.0.0.1:0",
		"ESBRIDGE_ROUTE=\n  /orders=" + ordersURL + "\n\t/payments=" + paymentsURL + "?start=earliest\n",
		"ESBRIDGE_TRUSTED_PROXY=10.0.0.0/8 \n127.0.0.1",
		"ESBRIDGE_MAX_CLIENTS_PER_IP=1",
		"ESBRIDGE_LOG_FORMAT=json",
		"ESBRIDGE_HEARTBEAT=1h",
	})
	b.WaitReadyz(http.StatusOK)
	for _, line := range scanLines(b.Output()) {
		if !json.Valid([]byte(line)) {
			t.Errorf("ESBRIDGE_LOG_FORMAT=json: a log line is not JSON: %s", line)
		}
	}

	// The second route, with its option.
	p := openStream(t, http.DefaultClient, b.URL("/payments"), xff("192.0.2.1"))
	if p.refused() {
		t.Fatal("the first stream of 192.0.2.1 was refused")
	}
	p.expectData("p1", "p2")
	// The limit, for the address that the second proxy gives.
	if !openStream(t, http.DefaultClient, b.URL("/orders"), xff("192.0.2.1")).refused() {
		t.Error("a second stream of 192.0.2.1 was served: ESBRIDGE_MAX_CLIENTS_PER_IP=1 or ESBRIDGE_TRUSTED_PROXY was not taken")
	}
	// The first route.
	o := openStream(t, http.DefaultClient, b.URL("/orders"), xff("192.0.2.2"))
	if o.refused() {
		t.Fatal("the first stream of 192.0.2.2 was refused")
	}
	o.syncLive(orders.publish)
	orders.publish("o1")
	o.expectData("o1")
}

// A flag on the command line wins over its variable; for -route, any
// -route leaves ESBRIDGE_ROUTE out altogether. The log says which
// variables it did not take.
func TestEnvCommandLineWins(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	_, a := ns.jetStream("FROMENV")
	pub, bURL := ns.jetStream("FROMFLAG")
	br := startBridgeEnv(t, []string{"ESBRIDGE_ROUTE=/a=" + a + " /c=" + a, "ESBRIDGE_LISTEN=bad:addr:x"},
		"-listen", "127.0.0.1:0", "-route", "/b="+bURL)
	br.WaitReadyz(http.StatusOK)
	if code, _, _ := br.Get("/a"); code != http.StatusNotFound {
		t.Errorf("GET /a, a route of ESBRIDGE_ROUTE beside -route: %d, want 404", code)
	}
	c := connect(t, br.URL("/b"), "")
	c.syncLive(pub.publish)
	for _, name := range []string{"ESBRIDGE_ROUTE", "ESBRIDGE_LISTEN"} {
		br.WaitLog(`variable=`+name, 1)
	}
}

// A variable that names no flag, a bad value from a variable, and a
// ${NAME} that cannot be replaced each stop esbridge before it listens,
// with status 2 and one line that names the variable; no value of a
// variable shows.
func TestEnvBadVariables(t *testing.T) {
	t.Parallel()
	valid := "/a=jetstream://127.0.0.1:" + freePort(t) + "/S"
	const secret = "s3cret-value"
	cases := []struct {
		name string
		env  []string
		args []string
		want []string // what the line must name
	}{
		{"misspelt-flag", []string{"ESBRIDGE_LISTN=127.0.0.1:0", "ESBRIDGE_ROUTE=" + valid}, nil, []string{"ESBRIDGE_LISTN"}},
		{"plural", []string{"ESBRIDGE_ROUTES=" + valid}, nil, []string{"ESBRIDGE_ROUTES"}},
		{"misspelt-beside-flags", []string{"ESBRIDGE_MAX_CLIENT=5"}, []string{"-route", valid}, []string{"ESBRIDGE_MAX_CLIENT"}},
		{"empty-misspelt", []string{"ESBRIDGE_LISTN="}, []string{"-route", valid}, []string{"ESBRIDGE_LISTN"}},
		{"not-a-number", []string{"ESBRIDGE_BACKLOG=many"}, []string{"-route", valid}, []string{"ESBRIDGE_BACKLOG", "-backlog"}},
		{"out-of-range", []string{"ESBRIDGE_BACKLOG=0"}, []string{"-route", valid}, []string{"ESBRIDGE_BACKLOG", "-backlog"}},
		{"not-a-bool", []string{"ESBRIDGE_DEMO=yes"}, []string{"-route", valid}, []string{"ESBRIDGE_DEMO"}},
		{"bad-listen", []string{"ESBRIDGE_LISTEN=bad:addr:x", "ESBRIDGE_ROUTE=" + valid}, nil, []string{"ESBRIDGE_LISTEN", "-listen"}},
		{"bad-route", []string{"ESBRIDGE_ROUTE=" + valid + " /b=kafka://127.0.0.1:99999/t"}, nil, []string{"ESBRIDGE_ROUTE", "/b="}},
		{"bad-proxy", []string{"ESBRIDGE_TRUSTED_PROXY=10.0.0.0/8 nonsense"}, []string{"-route", valid}, []string{"ESBRIDGE_TRUSTED_PROXY", `"nonsense"`}},
		{"unset-in-route", []string{"ESBRIDGE_ROUTE=/b=nats://bridge:${NATS_PASSWORD_UNSET}@127.0.0.1:4222/x"}, nil, []string{"NATS_PASSWORD_UNSET", "/b="}},
		{"empty-in-route", []string{"EMPTY_PASSWORD=", "ESBRIDGE_ROUTE=/b=nats://bridge:${EMPTY_PASSWORD}@127.0.0.1:4222/x"}, nil, []string{"EMPTY_PASSWORD", "/b="}},
		{"unset-on-command-line", nil, []string{"-route", "/b=nats://127.0.0.1:4222/x?token=${TOKEN_UNSET}"}, []string{"TOKEN_UNSET", "-route"}},
		{"unclosed", []string{"PASS=" + secret}, []string{"-route", "/b=nats://u:${PASS@127.0.0.1:4222/x"}, []string{"${NAME}", "-route"}},
		{"unset-in-file", []string{"ESBRIDGE_TLS_CERT=${CERT_DIR_UNSET}/cert.pem", "ESBRIDGE_TLS_KEY=/k.pem"}, []string{"-route", valid}, []string{"CERT_DIR_UNSET", "ESBRIDGE_TLS_CERT"}},
		{"unset-in-file-flag", nil, []string{"-route", valid, "-jwt-secret-file", "${SECRETS_UNSET}/jwt"}, []string{"SECRETS_UNSET", "-jwt-secret-file"}},
		{"too-long", []string{"LONG=" + strings.Repeat("x", 70<<10)}, []string{"-route", "/b=nats://127.0.0.1:4222/x?token=${LONG}"}, []string{"LONG", "64 KiB"}},
		{"secret-with-bad-option", []string{"PASS=" + secret, "ESBRIDGE_ROUTE=/b=nats://u:${PASS}@127.0.0.1:4222/x?bogus=1"}, nil, []string{"ESBRIDGE_ROUTE", "${PASS}", "bogus"}},
		{"secret-token-with-bad-option", []string{"TOKEN=" + secret}, []string{"-route", "/b=jetstream://127.0.0.1:4222/S?token=${TOKEN}&format=xml"}, []string{"-route", "format"}},
		{"secret-in-host", []string{"HOST=" + secret + "@evil"}, []string{"-route", "/b=kafka://${HOST}:9092/t"}, []string{"${HOST}", "host"}},
		{"secret-bad-url", []string{"PASS=" + secret}, []string{"-route", "/b=kafka://u:${PASS}@127.0.0.1:9x/t?sasl=plain"}, []string{"-route", "invalid port"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p := startProcEnv(t, tc.env, tc.args...)
			code := p.Wait(waitFor)
			out := p.Output()
			lines := scanLines(out)
			if code != 2 || len(lines) != 1 {
				t.Fatalf("exit status %d with %d lines, want 2 and one line:\n%s", code, len(lines), out)
			}
			for _, w := range tc.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("the line does not name %s: %s", w, lines[0])
				}
			}
			if strings.Contains(out, secret) {
				t.Errorf("the line shows the value of a variable: %s", out)
			}
			if len(out) > 1000 {
				t.Errorf("the line is %d bytes long", len(out))
			}
		})
	}
}

// ${NAME} in a route URL is replaced by the variable's value, whatever
// characters a password or a token has; the value never shows in the log.
func TestEnvSecretsInRoutes(t *testing.T) {
	t.Parallel()
	const password = "p@ss/w:rd?#%+ &x=1"
	const token = "dG9r+ZW4/Pz8=" // base64, with its '+', '/' and '='
	for _, tc := range []struct {
		name  string
		opts  server.Options
		route string // the URL, with %s for the server's address
		env   []string
		conn  nats.Option
	}{
		{"password", server.Options{Username: "bridge", Password: password}, "nats://bridge:${NATS_PASSWORD}@%s/ticks",
			[]string{"NATS_PASSWORD=" + password}, nats.UserInfo("bridge", password)},
		{"token", server.Options{Authorization: token}, "nats://%s/ticks?token=${NATS_TOKEN}",
			[]string{"NATS_TOKEN=" + token}, nats.Token(token)},
		{"whole-url", server.Options{Username: "bridge", Password: "plain"}, "${NATS_URL}",
			[]string{"NATS_URL=nats://bridge:plain@%s/ticks"}, nats.UserInfo("bridge", "plain")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := tc.opts
			opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", -1, true, true
			srv, err := server.NewServer(&opts)
			if err != nil {
				t.Fatal(err)
			}
			srv.Start()
			t.Cleanup(srv.Shutdown)
			if !srv.ReadyForConnections(waitFor) {
				t.Fatal("nats-server not ready")
			}
			addr := srv.Addr().String()
			env := []string{"ESBRIDGE_ROUTE=/ticks=" + strings.ReplaceAll(tc.route, "%s", addr), "ESBRIDGE_LISTEN=127.0.0.1:0"}
			for _, kv := range tc.env {
				env = append(env, strings.ReplaceAll(kv, "%s", addr))
			}
			b := startBridgeEnv(t, env, "-log-level", "debug")
			b.WaitReadyz(http.StatusOK) // connected: the broker took the credentials

			nc, err := nats.Connect("nats://"+addr, tc.conn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			publish := func(payloads ...string) {
				for _, p := range payloads {
					if err := nc.Publish("ticks", []byte(p)); err != nil {
						t.Fatal(err)
					}
				}
			}
			c := connect(t, b.URL("/ticks"), "")
			c.syncLive(publish)
			publish("t1")
			c.expectData("t1")
			for _, s := range []string{password, token, "plain"} {
				if strings.Contains(b.Output(), s) {
					t.Errorf("the log shows the secret %q", s)
				}
			}
		})
	}
}

// ${NAME} in a file flag is replaced by the variable's value, on the
// command line and in a variable, as systemd's LoadCredential= wants
// (${CREDENTIALS_DIRECTORY}/name); a repeatable file flag's variable holds
// several files.
func TestEnvFileFlags(t *testing.T) {
	t.Parallel()
	ns := runNATS(t)
	pub, stream := ns.jetStream("FILES")
	dir := t.TempDir()
	cert := tlstest.New(t, "esbridge-env")
	cert.Write(t, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"))
	oldSecret := []byte("an older secret, of 32 bytes or more")
	for name, secret := range map[string][]byte{"jwt-old": oldSecret, "jwt-new": testSecret} {
		if err := os.WriteFile(filepath.Join(dir, name), secret, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := startBridgeEnv(t, []string{
		"CREDENTIALS_DIRECTORY=" + dir,
		"ESBRIDGE_JWT_SECRET_FILE=${CREDENTIALS_DIRECTORY}/jwt-old ${CREDENTIALS_DIRECTORY}/jwt-new",
		"ESBRIDGE_ROUTE=/files=" + stream,
	}, "-listen", "127.0.0.1:0", "-tls-cert", "${CREDENTIALS_DIRECTORY}/cert.pem", "-tls-key", "${CREDENTIALS_DIRECTORY}/key.pem")

	if cn := served(t, b, cert); cn != "esbridge-env" {
		t.Errorf("the certificate served is %q, want esbridge-env", cn)
	}
	hc := tlsClient(t, true, cert)
	url := "https://" + b.Addr + "/files"
	get := func(tok string) int {
		req, err := http.NewRequest(http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	old, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"routes": []string{"/files"}, "exp": time.Now().Add(time.Hour).Unix()}).SignedString(oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, token string
		want        int
	}{
		{"no-token", "", http.StatusUnauthorized},
		{"first-file", old, http.StatusOK},
		{"second-file", signToken(t, time.Now().Add(time.Hour), "/files"), http.StatusOK},
	} {
		if code := get(tc.token); code != tc.want {
			t.Errorf("%s: GET /files answers %d, want %d", tc.name, code, tc.want)
		}
	}
	c := openStream(t, hc, url, http.Header{"Authorization": {"Bearer " + old}})
	c.syncLive(pub.publish)
}

// expandURL puts each value where its ${NAME} stands, encoded for that
// part of the URL, and takes nothing in a value for a reference.
func TestEnvExpandURL(t *testing.T) {
	t.Parallel()
	env := environment{"P": "p@ss/w:rd?#%+ &", "H": "kafka-0.local:9093", "U": "nats://u:pw@h:4222/x", "NESTED": "${P}", "S": "a.b"}
	for _, tc := range []struct{ raw, want string }{
		{"nats://u:${P}@h/x", "nats://u:p%40ss%2Fw%3Ard%3F%23%25%2B%20%26@h/x"},
		{"nats://h/x?token=${P}&tls=true", "nats://h/x?token=p%40ss%2Fw%3Ard%3F%23%25%2B%20%26&tls=true"},
		{"kafka://${H},b:9092/t", "kafka://kafka-0.local:9093,b:9092/t"},
		{"kafka://u:p@${H}/t", "kafka://u:p@kafka-0.local:9093/t"},
		{"${U}?start=earliest", "nats://u:pw@h:4222/x?start=earliest"},
		{"nats://h/${S}", "nats://h/a.b"},
		{"nats://h/x?token=${NESTED}", "nats://h/x?token=%24%7BP%7D"},
		{"nats://h/x?token=a%24{P}", "nats://h/x?token=a%24{P}"},
		{"nats://h/x", "nats://h/x"},
	} {
		got, err := env.expandURL(tc.raw)
		if err != nil || got != tc.want {
			t.Errorf("expandURL(%q) = %q, %v; want %q", tc.raw, got, err, tc.want)
		}
	}
	for _, raw := range []string{"nats://h/${UNSET}", "nats://h/${", "nats://h/${P", "nats://h/${1P}", "nats://h/${}", "nats://${P}/x"} {
		if got, err := env.expandURL(raw); err == nil {
			t.Errorf("expandURL(%q) = %q, want an error", raw, got)
		}
	}
}

// Whatever a password or a token holds, the URL made with it gives it back
// whole, and redact hides neither the reference nor shows the value.
func FuzzEnvExpandURL(f *testing.F) {
	for _, s := range []string{"plain", "p@ss/w:rd?#%+ &x=1", "dG9r+ZW4/Pz8=", "${P}", "é\x00\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, secret string) {
		if secret == "" || len(secret) > maxExpanded/4 {
			return
		}
		env := environment{"P": secret}
		const raw = "/a=nats://u:${P}@h:4222/x?token=${P}"
		path, tmpl, _ := strings.Cut(raw, "=")
		s, err := env.expandURL(tmpl)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parseRoute(path + "=" + s)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if p, _ := f.url.User.Password(); p != secret {
			t.Errorf("password %q, want %q", p, secret)
		}
		if tok := f.url.Query().Get("token"); tok != secret {
			t.Errorf("token %q, want %q", tok, secret)
		}
		if r := redact(raw); r != "/a=nats://u:${P}@h:4222/x?token=${P}" {
			t.Errorf("redact(%q) = %q", raw, r)
		}
	})
}
