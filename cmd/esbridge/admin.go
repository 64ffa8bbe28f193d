package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/esbridge/esbridge/bridge"
)

// Reasons a connection is refused, the values of the reason label of
// esbridge_connections_refused_total.
const (
	refusedAuth  = "auth"  // the client did not authenticate
	refusedLimit = "limit" // a connection limit was reached
)

// metrics are the program's Prometheus metrics, on a registry of their own:
// the bridge's figures, read from it at each scrape, the connections
// refused, and the Go runtime's and the process's.
type metrics struct {
	reg     *prometheus.Registry
	refusal *prometheus.CounterVec
}

// newMetrics returns the metrics of b.
func newMetrics(b *bridge.Bridge) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		refusal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "esbridge_connections_refused_total",
			Help: "Connections refused, by reason: auth (not authenticated) or limit (a connection limit reached).",
		}, []string{"reason"}),
	}
	for _, reason := range []string{refusedAuth, refusedLimit} {
		m.refusal.WithLabelValues(reason) // exported as 0 from the start
	}
	m.reg.MustRegister(m.refusal, bridgeCollector{b},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// refused counts a connection refused for reason, refusedAuth or
// refusedLimit ("auth" or "limit"); any other reason is counted as
// "other", so that the label's values stay few. It is safe for concurrent
// use, and does nothing on a nil *metrics.
func (m *metrics) refused(reason string) {
	if m == nil {
		return
	}
	if reason != refusedAuth && reason != refusedLimit {
		reason = "other"
	}
	m.refusal.WithLabelValues(reason).Inc()
}

// statsTimeout bounds a scrape's look-ups of the streams' heads (each is
// bounded more tightly by the bridge).
const statsTimeout = 5 * time.Second

// bridgeCollector exports a bridge's Stats, read at each scrape.
type bridgeCollector struct{ b *bridge.Bridge }

// The bridge's metrics. Counters and gauges are per route; gaps also by
// reason.
var (
	routeInfoDesc = prometheus.NewDesc("esbridge_route_info",
		"A route and the stream it serves (always 1).", []string{"route", "stream"}, nil)
	sourceUpDesc = prometheus.NewDesc("esbridge_source_up",
		"Whether the route's source is connected and its live reader open (1) or not (0), as /readyz tells.", []string{"route"}, nil)
	clientsDesc = prometheus.NewDesc("esbridge_clients",
		"Clients connected to the route.", []string{"route"}, nil)
	publishedDesc = prometheus.NewDesc("esbridge_events_published_total",
		"Events published to the route's clients: messages, and gap events sent to all.", []string{"route"}, nil)
	bytesDesc = prometheus.NewDesc("esbridge_bytes_sent_total",
		"Bytes of event stream written to the route's clients (events, comments and retry lines, without HTTP framing).", []string{"route"}, nil)
	catchUpReadersDesc = prometheus.NewDesc("esbridge_catchup_readers",
		"Catch-up readers of the route open on the broker.", []string{"route"}, nil)
	catchUpWaitingDesc = prometheus.NewDesc("esbridge_catchup_waiting",
		"Clients of the route waiting for a catch-up reader.", []string{"route"}, nil)
	catchUpsDesc = prometheus.NewDesc("esbridge_catchups_total",
		"Clients caught up from the broker: resumes the in-memory log could not serve, and slow clients.", []string{"route"}, nil)
	slowDesc = prometheus.NewDesc("esbridge_slow_clients_total",
		"Clients that fell behind the in-memory log, and were caught up from the broker (or sent a gap, where it keeps no history).", []string{"route"}, nil)
	gapsDesc = prometheus.NewDesc("esbridge_gaps_total",
		"Gap events sent, by reason: one sent to all clients counts once, one sent to a client once.", []string{"route", "reason"}, nil)
	lagDesc = prometheus.NewDesc("esbridge_lag_messages",
		"Messages the route's live reader is behind the broker, summed over partitions (Kafka, JetStream; absent while the source is down, and for RabbitMQ).", []string{"route"}, nil)
	partitionLagDesc = prometheus.NewDesc("esbridge_partition_lag_messages",
		"Messages the route's live reader is behind the broker in the partition (absent where esbridge_lag_messages is).", []string{"route", "partition"}, nil)
	partitionStalledDesc = prometheus.NewDesc("esbridge_partition_stalled_seconds",
		"How long the route's live reader has been failing to read the partition (a Kafka partition whose leader is down or moving); 0 while it reads it.", []string{"route", "partition"}, nil)
	snapshotReadyDesc = prometheus.NewDesc("esbridge_snapshot_ready",
		"Whether the route's snapshot table is built and within its bounds (1) or not (0); absent for a route without a snapshot view.", []string{"route"}, nil)
	snapshotKeysDesc = prometheus.NewDesc("esbridge_snapshot_keys",
		"Keys in the route's snapshot table.", []string{"route"}, nil)
	snapshotBytesDesc = prometheus.NewDesc("esbridge_snapshot_bytes",
		"Bytes of the route's snapshot table counted against snapshot_max_bytes: keys, encoded events, and 128 a key.", []string{"route"}, nil)
	snapshotsDesc = prometheus.NewDesc("esbridge_snapshots_total",
		"Snapshots sent to clients of the route's snapshot view.", []string{"route"}, nil)
	snapshotsRefusedDesc = prometheus.NewDesc("esbridge_snapshots_refused_total",
		"Snapshots refused, the route's table being over snapshot_max_keys or snapshot_max_bytes.", []string{"route"}, nil)
	partitionLastReadDesc = prometheus.NewDesc("esbridge_partition_last_read_timestamp_seconds",
		"When the route's live reader last moved on in the partition, as seen at the scrapes (so to within the time between two scrapes).", []string{"route", "partition"}, nil)
)

// Describe implements prometheus.Collector.
func (bridgeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{routeInfoDesc, sourceUpDesc, clientsDesc, publishedDesc, bytesDesc,
		catchUpReadersDesc, catchUpWaitingDesc, catchUpsDesc, slowDesc, gapsDesc, lagDesc,
		partitionLagDesc, partitionStalledDesc, partitionLastReadDesc,
		snapshotReadyDesc, snapshotKeysDesc, snapshotBytesDesc, snapshotsDesc, snapshotsRefusedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c bridgeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), statsTimeout)
	defer cancel()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for _, st := range c.b.Stats(ctx) {
		route := st.Path
		gauge(routeInfoDesc, 1, route, st.Stream)
		up := 0.0
		if st.Ready {
			up = 1
		}
		gauge(sourceUpDesc, up, route)
		gauge(clientsDesc, float64(st.Clients), route)
		counter(publishedDesc, st.Published, route)
		counter(bytesDesc, st.BytesSent, route)
		gauge(catchUpReadersDesc, float64(st.CatchUpReaders), route)
		gauge(catchUpWaitingDesc, float64(st.CatchUpWaiting), route)
		counter(catchUpsDesc, st.Replays, route)
		counter(slowDesc, st.Slow, route)
		for reason, n := range st.Gaps {
			counter(gapsDesc, n, route, reason)
		}
		if st.LagKnown {
			gauge(lagDesc, float64(st.Lag), route)
		}
		if sn := st.Snapshot; sn != nil {
			ready := 0.0
			if sn.Ready {
				ready = 1
			}
			gauge(snapshotReadyDesc, ready, route)
			gauge(snapshotKeysDesc, float64(sn.Keys), route)
			gauge(snapshotBytesDesc, float64(sn.Bytes), route)
			counter(snapshotsDesc, sn.Served, route)
			counter(snapshotsRefusedDesc, sn.Refused, route)
		}
		for _, ps := range st.Partitions {
			p := strconv.Itoa(ps.Partition)
			gauge(partitionStalledDesc, ps.Stalled.Seconds(), route, p)
			gauge(partitionLastReadDesc, float64(ps.LastRead.UnixMilli())/1e3, route, p)
			if ps.LagKnown {
				gauge(partitionLagDesc, float64(ps.Lag), route, p)
			}
		}
	}
}

// adminHandler serves the admin port: /metrics, /healthz, /readyz with
// every route's state, and /debug/pprof/, registered here (not on
// http.DefaultServeMux, which esbridge never serves).
func adminHandler(b *bridge.Bridge, m *metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", b.ServeReadyz)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// An adminServer serves the admin port.
type adminServer struct {
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// startAdmin serves the admin port on addr, if addr is not empty (else
// it returns nil, whose close does nothing). Its error names the flag.
func startAdmin(addr string, b *bridge.Bridge, m *metrics, logger *slog.Logger) (*adminServer, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("invalid value %q for flag -admin-listen: %w", addr, err)
	}
	a := &adminServer{
		// No WriteTimeout: /debug/pprof/profile takes its seconds.
		srv:  &http.Server{Handler: adminHandler(b, m), ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: maxHeaderBytes},
		done: make(chan struct{}),
	}
	go func() {
		defer close(a.done)
		if err := a.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			logger.Error("admin server failed", "err", err)
		}
	}()
	logger.Info("esbridge admin listening", "addr", ln.Addr().String())
	return a, nil
}

// close stops the admin server, cutting requests still running (a
// profile, say) once ctx ends.
func (a *adminServer) close(ctx context.Context) {
	if a == nil {
		return
	}
	if err := a.srv.Shutdown(ctx); err != nil {
		a.srv.Close()
	}
	<-a.done
}
