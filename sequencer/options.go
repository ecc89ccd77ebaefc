package sequencer

// Option configures an Appender or a Service at construction.
type Option func(*options)

type options struct {
	feeds *Feeds
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithLocalFeeds makes every message appended in this process reach fs,
// the feeds of this process's gateway, in process, on the appending
// goroutine; the live copies for other processes go out on fs's
// connection. That connection should be made with nats.NoEcho, so fs does
// not receive them a second time.
func WithLocalFeeds(fs *Feeds) Option {
	return func(o *options) { o.feeds = fs }
}
