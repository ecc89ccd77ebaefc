package httpapi

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics counts the API's requests. A nil *Metrics counts nothing.
type Metrics struct {
	Requests *prometheus.CounterVec   // by route and HTTP status
	Seconds  *prometheus.HistogramVec // by route
}

// NewMetrics creates the API's metrics and registers them on reg (if not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_api_requests_total", Help: "HTTP API requests, by route and HTTP status code."},
			[]string{"route", "code"}),
		Seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gamerelay_api_request_seconds", Help: "HTTP API request duration, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"route"}),
	}
	if reg != nil {
		reg.MustRegister(m.Requests, m.Seconds)
	}
	return m
}

func (m *Metrics) observe(route string, status int, d time.Duration) {
	if m == nil {
		return
	}
	m.Requests.WithLabelValues(route, strconv.Itoa(status)).Inc()
	m.Seconds.WithLabelValues(route).Observe(d.Seconds())
}
