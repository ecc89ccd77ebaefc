// Package web serves the players' side of gamerelay from files embedded in
// the binary: the Connect Four demo page at /, the JavaScript client at
// /gamerelay.js (an ES module, docs/client-js.md) and its TypeScript
// declarations at /gamerelay.d.ts. The handler is stateless and safe for
// concurrent use; mount it at / next to the gateway's /ws.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed static
var static embed.FS

// file is one embedded asset, prepared once.
type file struct {
	name  string
	body  []byte
	ctype string
	etag  string
}

// contentTypes maps a file suffix to its Content-Type; files with other
// suffixes are not served.
var contentTypes = []struct{ suffix, ctype string }{
	{".d.ts", "application/typescript; charset=utf-8"},
	{".html", "text/html; charset=utf-8"},
	{".js", "text/javascript; charset=utf-8"},
	{".css", "text/css; charset=utf-8"},
	{".svg", "image/svg+xml"},
	{".png", "image/png"},
}

// csp keeps the page to its own origin: scripts, styles and the WebSocket
// ('self' covers ws: and wss: to the same host).
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the embedded files: "/" is the Connect Four page, every
// other file by its name ("/gamerelay.js", "/gamerelay.d.ts", "/app.js",
// "/connect4.js", "/style.css"). Responses carry a strong ETag and
// "Cache-Control: no-cache", so browsers revalidate (304) and pick up a new
// release at once. Only GET and HEAD are allowed.
func Handler() http.Handler {
	files := make(map[string]*file)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		name := strings.TrimPrefix(p, "static/")
		ctype := ""
		for _, ct := range contentTypes {
			if strings.HasSuffix(name, ct.suffix) {
				ctype = ct.ctype
				break
			}
		}
		if ctype == "" {
			return nil
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files["/"+name] = &file{
			name:  name,
			body:  body,
			ctype: ctype,
			etag:  `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`,
		}
		return nil
	})
	if err != nil {
		panic("web: embedded files: " + err.Error()) // cannot happen: embed.FS is read-only and complete
	}
	files["/"] = files["/index.html"]
	delete(files, "/index.html")
	return &handler{files: files}
}

type handler struct {
	files map[string]*file // static after construction
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := h.files[r.URL.Path]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.ctype)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("ETag", f.etag)
	hd.Set("X-Content-Type-Options", "nosniff")
	if path.Ext(f.name) == ".html" {
		hd.Set("Content-Security-Policy", csp)
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("X-Frame-Options", "DENY")
	} else {
		// The client module may be imported by pages of other origins.
		hd.Set("Access-Control-Allow-Origin", "*")
	}
	http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.body))
}
