package sequencer

import "github.com/prometheus/client_golang/prometheus"

// Metrics counts what the sequencer and feeds do. A nil *Metrics is valid and
// counts nothing.
type Metrics struct {
	Appended           prometheus.Counter
	AppendFailed       *prometheus.CounterVec // by code
	Duplicates         prometheus.Counter
	LeaseRenewalErrors prometheus.Counter
	Verified           *prometheus.CounterVec // by found: messages looked for in the log past the duplicate window
	Conflicts          *prometheus.CounterVec // by JetStream error code
	Retries            *prometheus.CounterVec // by reason
	BatchSize          prometheus.Histogram
	AppendLatency      prometheus.Histogram
	PartitionsOwned    prometheus.Gauge
	GamesActive        prometheus.Gauge
	FeedGapsFilled     prometheus.Counter
	FeedDupsDropped    prometheus.Counter
	FeedHeadChecks     prometheus.Counter
	FeedsOpen          prometheus.Gauge
}

// NewMetrics creates the sequencer's metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_appended_total", Help: "Messages appended to the game log by this process."}),
		AppendFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_append_failed_total", Help: "Append requests refused or failed, by error code."}, []string{"code"}),
		Duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_duplicates_total", Help: "Appends answered from JetStream's duplicate window (retried idempotency keys)."}),
		LeaseRenewalErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_lease_renewal_errors_total", Help: "Partition lease renewals that failed for a transient reason (the lease is kept until a TTL passed without renewal)."}),
		Verified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_verified_total", Help: "Retried appends looked for in the log because their first attempt was older than the duplicate window allows relying on, by whether they were found (stored by an earlier attempt)."}, []string{"found"}),
		Conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_conflicts_total", Help: "Checked publishes refused because the game's head moved, by JetStream error code."}, []string{"err_code"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gamerelay_sequencer_retries_total", Help: "Append attempts retried, by reason."}, []string{"reason"}),
		BatchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gamerelay_sequencer_batch_size", Help: "Messages per publish (1 = single checked publish, more = atomic batch).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000}}),
		AppendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gamerelay_sequencer_publish_seconds", Help: "JetStream publish round trip per single or batch publish.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16)}),
		PartitionsOwned: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gamerelay_sequencer_partitions_owned", Help: "Partitions whose lease this process holds."}),
		GamesActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gamerelay_sequencer_games_active", Help: "Games with in-memory sequencer state."}),
		FeedGapsFilled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_feed_gap_messages_filled_total", Help: "Messages missing from live delivery and fetched from the stream."}),
		FeedDupsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_feed_duplicates_dropped_total", Help: "Live messages dropped because they were already delivered."}),
		FeedHeadChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gamerelay_feed_head_checks_total", Help: "Head lookups made by feeds to catch lost tail messages."}),
		FeedsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gamerelay_feeds_open", Help: "Games with an open live feed in this process."}),
	}
	if reg != nil {
		reg.MustRegister(m.Appended, m.AppendFailed, m.Duplicates, m.LeaseRenewalErrors, m.Verified, m.Conflicts, m.Retries, m.BatchSize,
			m.AppendLatency, m.PartitionsOwned, m.GamesActive, m.FeedGapsFilled, m.FeedDupsDropped,
			m.FeedHeadChecks, m.FeedsOpen)
	}
	return m
}
