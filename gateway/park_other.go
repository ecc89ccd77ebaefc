//go:build !linux

package gateway

import (
	"net"
	"syscall"
)

// poller parks nothing outside Linux: idle connections keep their reader
// goroutine.
type poller struct{}

func (p *poller) parkLocked(*conn) bool { return false }
func (p *poller) wake(*conn)            {}
func (p *poller) parkedCount() int      { return 0 }
func (p *poller) stop()                 {}

// rawConn finds no socket to write to directly outside Linux.
func rawConn(net.Conn) syscall.RawConn { return nil }

// writeNowLocked writes nothing outside Linux: every frame goes through the
// connection's writer goroutine.
func (c *conn) writeNowLocked([]byte) int { return 0 }
