package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts what the gateway does. A nil *Metrics counts nothing.
type Metrics struct {
	Connections   prometheus.Gauge
	GamesHosted   prometheus.Gauge
	MessagesIn    prometheus.Counter
	MessagesOut   prometheus.Counter
	BytesOut      prometheus.Counter
	AppendSeconds prometheus.Histogram
	AppendErrors  prometheus.Counter
	Closes        *prometheus.CounterVec // by reason
	Dropped       *prometheus.CounterVec // by reason
	Errors        *prometheus.CounterVec // by code
	Refused       *prometheus.CounterVec // by reason
}

// NewMetrics creates the gateway's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Connections: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gamerelay_gateway_connections", Help: "Open WebSocket connections."}),
		GamesHosted: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gamerelay_gateway_games_hosted", Help: "Games with at least one client on this gateway."}),
		MessagesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_gateway_messages_in_total", Help: "Game messages from clients appended to the log."}),
		MessagesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_gateway_messages_out_total", Help: "Game messages written to clients (live and replay)."}),
		BytesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_gateway_bytes_out_total", Help: "Payload bytes of game messages written to clients."}),
		AppendSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gamerelay_gateway_append_seconds", Help: "Time from a client message to its acknowledged append.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		AppendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_gateway_append_errors_total", Help: "Client messages the log did not take."}),
		Closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_gateway_closes_total", Help: "Connections closed, by reason."}, []string{"reason"}),
		Dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_gateway_dropped_total", Help: "Game messages not written to a client, by reason (the client resumes with since)."}, []string{"reason"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_gateway_errors_total", Help: "Error frames sent to clients, by code."}, []string{"code"}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_gateway_refused_total", Help: "Connections and joins refused by a limit, by reason."}, []string{"reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.Connections, m.GamesHosted, m.MessagesIn, m.MessagesOut, m.BytesOut,
			m.AppendSeconds, m.AppendErrors, m.Closes, m.Dropped, m.Errors, m.Refused)
	}
	return m
}

func (m *Metrics) connections(d float64) {
	if m != nil {
		m.Connections.Add(d)
	}
}

func (m *Metrics) gamesHosted(d float64) {
	if m != nil {
		m.GamesHosted.Add(d)
	}
}

func (m *Metrics) appended(d time.Duration, ok bool) {
	if m == nil {
		return
	}
	m.AppendSeconds.Observe(d.Seconds())
	if ok {
		m.MessagesIn.Inc()
	} else {
		m.AppendErrors.Inc()
	}
}

func (m *Metrics) wrote(n, bytes int) {
	if m != nil && n > 0 {
		m.MessagesOut.Add(float64(n))
		m.BytesOut.Add(float64(bytes))
	}
}

func (m *Metrics) closed(reason string) {
	if m != nil {
		m.Closes.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) dropped(reason string) {
	if m != nil {
		m.Dropped.WithLabelValues(reason).Inc()
	}
}

func (m *Metrics) error(code string) {
	if m != nil {
		m.Errors.WithLabelValues(code).Inc()
	}
}

func (m *Metrics) refused(reason string) {
	if m != nil {
		m.Refused.WithLabelValues(reason).Inc()
	}
}
