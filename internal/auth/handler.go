package auth

import (
	"context"
	"log/slog"
	"net/http"
)

// Handler returns a handler that authorizes the requests for the paths in
// protected (exact paths, as the bridge's routes are matched) before
// passing them to next; other requests pass as they are. A request
// refused gets 401 with WWW-Authenticate: Bearer, or 403, with one word
// as the body; the reason goes to the log, at debug level. An authorized
// request whose token expires is passed on with a context that ends then
// (at its exp plus Config.Leeway, see Decision.Expires), which ends its
// stream: the browser reconnects with Last-Event-ID and the token it has
// by then.
func (a *Authorizer) Handler(next http.Handler, protected []string) http.Handler {
	paths := make(map[string]bool, len(protected))
	for _, p := range protected {
		paths[p] = true
	}
	return a.HandlerFunc(next, func(r *http.Request) []string {
		if paths[r.URL.Path] {
			return []string{r.URL.Path}
		}
		return nil
	})
}

// HandlerFunc is Handler for requests that may open several routes at
// once: routes returns the protected route paths that r opens, none for
// a request that needs no token. r is authorized if its token opens every
// one, and its stream ends at the token's exp plus Config.Leeway.
func (a *Authorizer) HandlerFunc(next http.Handler, routes func(r *http.Request) []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paths := routes(r)
		if len(paths) == 0 {
			next.ServeHTTP(w, r)
			return
		}
		var d Decision
		for _, p := range paths {
			if d = a.Authorize(r.Context(), r, p); d.Status != http.StatusOK {
				if a.logger.Enabled(r.Context(), slog.LevelDebug) {
					a.logger.Debug("request refused", "status", d.Status, "reason", d.Reason,
						"route", p, "remote", r.RemoteAddr)
				}
				if a.cfg.OnRefused != nil {
					a.cfg.OnRefused("auth")
				}
				refuse(w, d.Status)
				return
			}
		}
		if !d.Expires.IsZero() {
			ctx, cancel := context.WithDeadline(r.Context(), d.Expires)
			defer cancel()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// refuse answers 401 or 403 (RFC 6750).
func refuse(w http.ResponseWriter, status int) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="esbridge"`)
		http.Error(w, "unauthorized", status)
		return
	}
	h.Set("WWW-Authenticate", `Bearer realm="esbridge", error="insufficient_scope"`)
	http.Error(w, "forbidden", status)
}
