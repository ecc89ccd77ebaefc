package httpapi

// Routes lists every operation as "METHOD path", for the tests.
func Routes() []string {
	out := make([]string, 0, len(routes))
	for _, r := range routes {
		out = append(out, r.method+" "+r.path)
	}
	return out
}
