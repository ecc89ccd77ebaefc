//go:build !linux

package gateway

// poller parks nothing outside Linux: idle connections keep their reader
// goroutine.
type poller struct{}

func (p *poller) park(*conn) bool  { return false }
func (p *poller) wake(*conn)       {}
func (p *poller) parkedCount() int { return 0 }
func (p *poller) stop()            {}
