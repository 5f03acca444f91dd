package admin

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"

	"github.com/vigil-agent/vigil/prober"
	"github.com/vigil-agent/vigil/proxy"
	"github.com/vigil-agent/vigil/runtime"
	"github.com/vigil-agent/vigil/supervisor"
)

// The Grafana dashboard in configs/dashboards may name only metrics that
// vigil exports. The exported set is read off the real collectors, built
// the way cmd/vigil/run.go builds them, so a renamed metric fails here.

const dashboardPath = "../configs/dashboards/vigil.json"

type metricKind int

const (
	plainMetric metricKind = iota
	histogramMetric
	summaryMetric
)

// recordingRegisterer registers into a real registry and keeps what it was
// given, so that families without samples yet (empty vectors) are known too.
type recordingRegisterer struct {
	*prometheus.Registry
	collectors []prometheus.Collector
}

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	r.collectors = append(r.collectors, c)
	return r.Registry.Register(c)
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// exportedMetrics returns every metric family vigil's registry can hold.
func exportedMetrics(t *testing.T) map[string]metricKind {
	t.Helper()
	reg := &recordingRegisterer{Registry: prometheus.NewRegistry()}
	log := slog.New(slog.DiscardHandler)

	reg.MustRegister(collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	pm := prober.NewManager(prober.Options{Registerer: reg, Logger: log})
	defer pm.Stop()
	supervisor.New(supervisor.Options{Registerer: reg, Logger: log, Prober: pm, NodeName: "test"})
	proxy.New(proxy.Options{Registerer: reg, Logger: log})
	runtime.Instrument(nil, reg)

	out := map[string]metricKind{}
	for _, c := range reg.collectors {
		kind := plainMetric
		switch c.(type) {
		case *prometheus.HistogramVec, prometheus.Histogram:
			kind = histogramMetric
		case *prometheus.SummaryVec, prometheus.Summary:
			kind = summaryMetric
		}
		descs := make(chan *prometheus.Desc, 64)
		go func() { c.Describe(descs); close(descs) }()
		for d := range descs {
			// Desc keeps its name unexported; its String form is stable.
			if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
				out[m[1]] = max(out[m[1]], kind)
			}
		}
	}
	// The Go and process collectors describe themselves loosely; what they
	// gather is authoritative.
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[f.GetName()] = histogramMetric
		case dto.MetricType_SUMMARY:
			out[f.GetName()] = summaryMetric
		default:
			if _, ok := out[f.GetName()]; !ok {
				out[f.GetName()] = plainMetric
			}
		}
	}
	return out
}

// The PromQL words that are neither metrics nor followed by "(".
var promqlWords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true,
	"offset": true, "inf": true, "nan": true, "atan2": true,
	// Aggregations may be followed by a grouping clause before "(".
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "limitk": true, "limit_ratio": true,
}

var (
	stringsRE  = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	grafanaRE  = regexp.MustCompile(`\$\{[^}]*\}|\$\w+`)
	matchersRE = regexp.MustCompile(`\{[^{}]*\}`)
	rangesRE   = regexp.MustCompile(`\[[^\[\]]*\]`)
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	tokenRE    = regexp.MustCompile(`[0-9][0-9a-zA-Z_.]*|[a-zA-Z_:][a-zA-Z0-9_:]*\s*\(?`)
)

// metricNames returns the metric names a PromQL expression (or a Grafana
// label_values() query) selects: what is left after strings, Grafana
// variables, label matchers, ranges, grouping label lists, numbers,
// function calls and keywords are taken out.
func metricNames(expr string) []string {
	s := stringsRE.ReplaceAllString(expr, `""`)
	s = grafanaRE.ReplaceAllString(s, "1m")
	s = matchersRE.ReplaceAllString(s, " ")
	s = rangesRE.ReplaceAllString(s, " ")
	s = groupingRE.ReplaceAllString(s, " ")
	if inner, ok := strings.CutPrefix(strings.TrimSpace(s), "label_values("); ok {
		// label_values(metric, label): the second argument is a label.
		if i := strings.LastIndex(inner, ","); i >= 0 {
			s = inner[:i]
		} else {
			s = strings.TrimSuffix(inner, ")")
		}
	}
	var names []string
	for _, tok := range tokenRE.FindAllString(s, -1) {
		if tok[0] >= '0' && tok[0] <= '9' || strings.HasSuffix(tok, "(") {
			continue // a number or duration, or a function's name
		}
		if name := strings.TrimSpace(tok); !promqlWords[strings.ToLower(name)] {
			names = append(names, name)
		}
	}
	return names
}

// unknownMetrics returns the names in expr that vigil does not export. The
// series a histogram or summary exports under suffixes count as exported.
func unknownMetrics(expr string, exported map[string]metricKind) []string {
	var bad []string
	for _, name := range metricNames(expr) {
		if _, ok := exported[name]; ok {
			continue
		}
		ok := false
		for suffix, kinds := range map[string][]metricKind{
			"_bucket": {histogramMetric},
			"_sum":    {histogramMetric, summaryMetric},
			"_count":  {histogramMetric, summaryMetric},
		} {
			base, cut := strings.CutSuffix(name, suffix)
			if k, found := exported[base]; cut && found {
				for _, want := range kinds {
					ok = ok || k == want
				}
			}
		}
		if !ok {
			bad = append(bad, name)
		}
	}
	return bad
}

type dashboardQuery struct {
	where, expr string
}

// dashboardQueries returns every panel target's expr (rows included) and
// every templating query.
func dashboardQueries(t *testing.T, data []byte) []dashboardQuery {
	t.Helper()
	type panel struct {
		Title   string
		Type    string
		Targets []struct{ Expr string }
		Panels  json.RawMessage
	}
	var dash struct {
		Panels     []json.RawMessage
		Templating struct {
			List []struct {
				Name, Type string
				Query      json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("parse %s: %v", dashboardPath, err)
	}
	var out []dashboardQuery
	var walk func(raw []json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("parse panel: %v", err)
			}
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q has an empty expr", p.Title)
				}
				out = append(out, dashboardQuery{"panel " + p.Title, tg.Expr})
			}
			var nested []json.RawMessage
			if len(p.Panels) > 0 && json.Unmarshal(p.Panels, &nested) == nil {
				walk(nested)
			}
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if json.Unmarshal(v.Query, &q) != nil {
			_ = json.Unmarshal(v.Query, &q.Query) // the older plain-string form
		}
		out = append(out, dashboardQuery{"variable " + v.Name, q.Query})
	}
	return out
}

func TestDashboardNamesOnlyExportedMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.FromSlash(dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"uid": "${DS_PROMETHEUS}"`) {
		t.Errorf("panels should use the ${DS_PROMETHEUS} data source variable")
	}
	exported := exportedMetrics(t)
	queries := dashboardQueries(t, data)
	if len(queries) < 20 {
		t.Fatalf("only %d queries found: is the dashboard parsed right?", len(queries))
	}
	used := map[string]bool{}
	for _, q := range queries {
		names := metricNames(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: no metric in %q", q.where, q.expr)
		}
		for _, n := range names {
			used[n] = true
		}
		if bad := unknownMetrics(q.expr, exported); len(bad) > 0 {
			t.Errorf("%s: %q names metrics vigil does not export: %v", q.where, q.expr, bad)
		}
	}
	// The list: each must appear on the dashboard.
	for _, m := range []string{
		"prober_probe_total", "prober_probe_duration_seconds_bucket", "vigil_container_restarts",
		"vigil_container_state", "vigil_container_backoff_remaining_seconds",
		"vigil_cri_call_duration_seconds_bucket", "vigil_cri_call_errors_total",
		"vigil_proxy_requests_total", "vigil_proxy_request_duration_seconds_bucket",
		"vigil_proxy_endpoints", "vigil_proxy_endpoints_ready", "vigil_proxy_ejections_total",
		"vigil_proxy_retries_total", "vigil_proxy_client_hangups_total",
	} {
		if !used[m] {
			t.Errorf("the dashboard shows nothing of %s", m)
		}
	}
	if t.Failed() {
		names := make([]string, 0, len(exported))
		for n := range exported {
			names = append(names, n)
		}
		sort.Strings(names)
		t.Logf("exported: %s", strings.Join(names, " "))
	}
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want string
	}{
		{`rate(prober_probe_total{result="successful", pod=~"$pod"}[$__rate_interval])`,
			"prober_probe_total"},
		{`histogram_quantile(0.95, sum by (le, probe_type) (rate(x_bucket{a="b{c}"}[5m])))`,
			"x_bucket"},
		{`sum(a) / ignoring(code) group_left sum without (pod) (b offset 1h) > bool 0.5`, "a b"},
		{`count(up{job="by"} > 0) or vector(0)`, "up"},
		{`label_values(vigil_container_restarts{namespace=~"$namespace"}, pod)`,
			"vigil_container_restarts"},
		{`max_over_time(m[1h:5m]) * 1e3`, "m"},
	}
	for _, tt := range tests {
		if got := strings.Join(metricNames(tt.expr), " "); got != tt.want {
			t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
		}
	}
}

// TestDashboardCheckCatches proves the check can fail: names vigil does not
// export, and suffixes a metric of that kind does not have, are reported.
func TestDashboardCheckCatches(t *testing.T) {
	exported := exportedMetrics(t)
	for _, tt := range []struct {
		desc, expr, want string
	}{
		{"unknown metric", `sum(rate(vigil_made_up_total[5m]))`, "vigil_made_up_total"},
		{"typo", `vigil_container_restart`, "vigil_container_restart"},
		{"bucket of a counter",
			`histogram_quantile(0.9, sum by (le) (rate(vigil_proxy_requests_total_bucket[5m])))`,
			"vigil_proxy_requests_total_bucket"},
		{"kubelet name vigil lacks", `kubelet_running_pods`, "kubelet_running_pods"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			bad := unknownMetrics(tt.expr, exported)
			if len(bad) != 1 || bad[0] != tt.want {
				t.Errorf("unknownMetrics(%q) = %v, want [%s]", tt.expr, bad, tt.want)
			}
		})
	}
	// And the exported side is real: these pass.
	for _, expr := range []string{
		`rate(vigil_cri_call_duration_seconds_count[5m])`,
		`go_gc_duration_seconds_sum`,
		`process_resident_memory_bytes`,
	} {
		if bad := unknownMetrics(expr, exported); len(bad) > 0 {
			t.Errorf("unknownMetrics(%q) = %v, want none", expr, bad)
		}
	}
}
