package main

import "strings"

// redactURL returns s with the user information of every URL in it
// hidden: "user:password@" becomes "user:xxxxx@" and a lone token or
// user name ("nats://token@host") becomes "xxxxx@". s may be one URL, a
// comma-separated NATS list (with or without schemes), a MongoDB URI with
// several hosts (mongodb://, mongodb+srv://) or an error text quoting
// them. Every '@' ends a user information that begins after the nearest
// "://" or '@' before it (or at the start of s), so a password holding
// unescaped ',', '/', ':' or '?' is hidden whole; text without '@' is
// returned as it is. Log and return only redacted URLs.
func redactURL(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	var b strings.Builder
	start := 0 // where the current user information would begin
	for i := 0; i < len(s); i++ {
		switch {
		case strings.HasPrefix(s[i:], "://"):
			b.WriteString(s[start : i+3])
			i += 2
			start = i + 1
		case s[i] == '@':
			info := s[start:i]
			if user, _, ok := strings.Cut(info, ":"); ok {
				b.WriteString(user)
				b.WriteString(":")
			}
			b.WriteString("xxxxx@")
			start = i + 1
		}
	}
	b.WriteString(s[start:])
	return b.String()
}
