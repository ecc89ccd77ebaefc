package archiver

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the archiver does. A nil *Metrics is valid and counts
// nothing.
type Metrics struct {
	Archived        prometheus.Counter
	Duplicates      prometheus.Counter
	BodyFallbacks   prometheus.Counter
	Rejected        prometheus.Counter
	Conflicts       prometheus.Counter
	BatchSize       prometheus.Histogram
	WriteErrors     prometheus.Counter
	ConsumerPending *prometheus.GaugeVec // by partition
	AckPending      *prometheus.GaugeVec // by partition
	Lag             *prometheus.GaugeVec // by partition
	HistoryRequests *prometheus.CounterVec
}

// NewMetrics creates the archiver's metrics and registers them on reg (if
// not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Archived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_archiver_archived_total", Help: "Messages written to MongoDB by this process."}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_archiver_duplicates_total", Help: "Delivered messages that were already archived (redeliveries after a crash, timeout or outage)."}),
		BodyFallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_archiver_body_fallbacks_total", Help: "Messages archived without a body document (raw only) because MongoDB refused the body."}),
		Rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_archiver_rejected_total", Help: "Stream messages that are not gamerelay game messages (no msg_id header) and were not archived."}),
		Conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_archiver_conflicts_total", Help: "Messages whose (game, msg_id) was already archived from another stream message (numbers reused); kept in the conflicts collection."}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gamerelay_archiver_batch_size", Help: "Messages per fetched batch.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000}}),
		WriteErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_archiver_write_errors_total", Help: "Failed MongoDB write attempts; the batch is retried with backoff."}),
		ConsumerPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gamerelay_archiver_consumer_pending", Help: "Messages of the partition stream not yet delivered to any archiver."}, []string{"partition"}),
		AckPending: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gamerelay_archiver_consumer_ack_pending", Help: "Messages delivered to archivers and not yet acknowledged."}, []string{"partition"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gamerelay_archiver_lag_seconds", Help: "How far archiving trails the stream: the age of the oldest message of a batch MongoDB has not taken yet, else of the newest message of the last archived batch when it was archived; 0 when caught up."}, []string{"partition"}),
		HistoryRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_archiver_history_requests_total", Help: "History requests served, by result (ok or a wire error code)."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.Archived, m.Duplicates, m.BodyFallbacks, m.Rejected, m.Conflicts, m.BatchSize, m.WriteErrors,
			m.ConsumerPending, m.AckPending, m.Lag, m.HistoryRequests)
	}
	return m
}
