package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/vigil-agent/vigil/admin"
	"github.com/vigil-agent/vigil/proxy"
)

// The client commands read a running vigil's admin API and print what they
// read as kubectl does: tables by default, the API's JSON with -o json.

const (
	// maxResponse caps what a client command reads from the admin API.
	maxResponse = 64 << 20
	// clientTimeout bounds one request to the admin API.
	clientTimeout = 10 * time.Second
)

// clientCommands are the commands that read a running vigil's admin API.
func clientCommands() []*cobra.Command {
	get := &cobra.Command{
		Use:   "get RESOURCE",
		Short: "Show pods or endpoints of a running vigil",
		// Reached only when no resource command matched.
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var names []string
			for _, c := range cmd.Commands() {
				if c.IsAvailableCommand() {
					names = append(names, c.Name())
				}
			}
			known := strings.Join(names, ", ")
			if len(args) == 0 {
				return fmt.Errorf("get: name a resource: %s", known)
			}
			return fmt.Errorf("get: unknown resource %q: vigil serves %s", args[0], known)
		},
	}
	get.AddCommand(
		clientCommand("pods", "List pods: NAME READY STATUS RESTARTS AGE (-o wide adds IP, NODE, HOST-PORTS)",
			"/pods", []string{"wide"}, func() any { return &corev1.PodList{} },
			func(w io.Writer, v any, wide bool, now time.Time) error {
				return printPods(w, v.(*corev1.PodList), wide, now)
			}),
		clientCommand("endpoints", "List the ready endpoints of each Service", "/endpoints", nil,
			func() any { return &[]proxy.ServiceEndpoints{} },
			func(w io.Writer, v any, _ bool, _ time.Time) error {
				return printEndpoints(w, *v.(*[]proxy.ServiceEndpoints))
			}),
	)
	events := clientCommand("events", "List recent events, oldest first", "/events", nil,
		func() any { return &corev1.EventList{} },
		func(w io.Writer, v any, _ bool, now time.Time) error {
			return printEvents(w, v.(*corev1.EventList), now)
		})
	return []*cobra.Command{get, events}
}

// clientCommand builds one command that GETs path and prints it.
func clientCommand(use, short, path string, formats []string, newValue func() any,
	print func(w io.Writer, v any, wide bool, now time.Time) error) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
	}
	if use == "pods" {
		cmd.Aliases = []string{"pod", "po"}
	} else if use == "endpoints" {
		cmd.Aliases = []string{"endpoint", "ep"}
	}
	fs := cmd.Flags()
	addClientFlags(fs)
	allowed := append([]string{"json"}, formats...)
	fs.StringP("output", "o", "", "output format: "+strings.Join(allowed, " or "))
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		out, _ := fs.GetString("output")
		if out != "" && !slices.Contains(allowed, out) {
			return fmt.Errorf("--output: %q is not %s", out, strings.Join(allowed, " or "))
		}
		base, err := adminURL(fs)
		if err != nil {
			return err
		}
		v := newValue()
		if err := fetchJSON(cmd.Context(), base+path, v); err != nil {
			return err
		}
		w := cmd.OutOrStdout()
		if out == "json" {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(v)
		}
		return print(w, v, out == "wide", time.Now())
	}
	return cmd
}

func addClientFlags(fs *pflag.FlagSet) {
	fs.String("admin", "", "admin API of the vigil to read, as a URL or host:port "+
		"(default: admin.listen of --config, $VIGIL_ADMIN_LISTEN, or 127.0.0.1:10249)")
	fs.StringP("config", "c", "", "YAML config file whose admin.listen to read")
}

// adminURL is --admin, or else the admin.listen that vigil run would use
// with the same config file and environment.
func adminURL(fs *pflag.FlagSet) (string, error) {
	addr, _ := fs.GetString("admin")
	if addr == "" {
		cfg, err := loadConfig(fs)
		if err != nil {
			return "", err
		}
		addr = cfg.Admin.Listen
	}
	if !strings.Contains(addr, "://") {
		// A listen address such as ":10249" or "0.0.0.0:10249" is dialled
		// on this host.
		if strings.HasPrefix(addr, ":") || strings.HasPrefix(addr, "0.0.0.0:") {
			addr = "127.0.0.1:" + addr[strings.LastIndex(addr, ":")+1:]
		}
		addr = "http://" + addr
	}
	return strings.TrimRight(addr, "/"), nil
}

func fetchJSON(ctx context.Context, url string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, clientTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("--admin: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("read %s (is vigil running? see --admin): %w", url, err)
	}
	defer resp.Body.Close()
	body := io.LimitReader(resp.Body, maxResponse)
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(body, 512))
		return fmt.Errorf("read %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	if err := json.NewDecoder(body).Decode(v); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

func newTable(w io.Writer) *tabwriter.Writer {
	// kubectl's own settings: three spaces between columns.
	return tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
}

func row(w io.Writer, cells ...string) {
	fmt.Fprintln(w, strings.Join(cells, "\t"))
}

// printPods prints kubectl get pods' columns; NAMESPACE comes first when
// the pods span more than one namespace (as kubectl's -A).
func printPods(w io.Writer, list *corev1.PodList, wide bool, now time.Time) error {
	if len(list.Items) == 0 {
		_, err := fmt.Fprintln(w, "No resources found")
		return err
	}
	multi := false
	for _, p := range list.Items {
		multi = multi || p.Namespace != list.Items[0].Namespace
	}
	tw := newTable(w)
	head := []string{"NAME", "READY", "STATUS", "RESTARTS", "AGE"}
	if multi {
		head = append([]string{"NAMESPACE"}, head...)
	}
	if wide {
		head = append(head, "IP", "NODE", "HOST-PORTS")
	}
	row(tw, head...)
	for i := range list.Items {
		p := &list.Items[i]
		cells := []string{p.Name, podReady(p), podStatus(p), podRestarts(p, now),
			humanAge(p.CreationTimestamp.Time, now)}
		if multi {
			cells = append([]string{p.Namespace}, cells...)
		}
		if wide {
			cells = append(cells, orNone(p.Status.PodIP), orNone(p.Spec.NodeName),
				orNone(admin.HostPorts(p)))
		}
		row(tw, cells...)
	}
	return tw.Flush()
}

func podReady(p *corev1.Pod) string {
	ready := 0
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Ready {
			ready++
		}
	}
	return fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers))
}

// podStatus is kubectl's STATUS: the phase, unless a container waits or
// ended with a reason, or the pod is being deleted.
func podStatus(p *corev1.Pod) string {
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	running := false
	for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
		st := p.Status.ContainerStatuses[i].State
		switch {
		case st.Waiting != nil && st.Waiting.Reason != "":
			reason = st.Waiting.Reason
		case st.Terminated != nil && st.Terminated.Reason != "":
			reason = st.Terminated.Reason
		case st.Terminated != nil && st.Terminated.Signal != 0:
			reason = "Signal:" + strconv.Itoa(int(st.Terminated.Signal))
		case st.Terminated != nil:
			reason = "ExitCode:" + strconv.Itoa(int(st.Terminated.ExitCode))
		case st.Running != nil && p.Status.ContainerStatuses[i].Ready:
			running = true
		}
	}
	if reason == "Completed" && running {
		reason = "Running"
	}
	if p.DeletionTimestamp != nil {
		reason = "Terminating"
	}
	if reason == "" {
		reason = "Unknown"
	}
	return reason
}

// podRestarts is the sum of restarts and, as kubectl, how long ago the
// latest one ended.
func podRestarts(p *corev1.Pod, now time.Time) string {
	var n int32
	var last time.Time
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
		if t := cs.LastTerminationState.Terminated; t != nil && t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
	}
	if n > 0 && !last.IsZero() {
		return fmt.Sprintf("%d (%s ago)", n, humanAge(last, now))
	}
	return strconv.Itoa(int(n))
}

// printEndpoints prints kubectl get endpoints' NAME and ENDPOINTS, the
// addresses of every port, three at most and a count of the rest.
func printEndpoints(w io.Writer, list []proxy.ServiceEndpoints) error {
	if len(list) == 0 {
		_, err := fmt.Fprintln(w, "No resources found")
		return err
	}
	multi := false
	for _, se := range list {
		multi = multi || se.Namespace != list[0].Namespace
	}
	tw := newTable(w)
	if multi {
		row(tw, "NAMESPACE", "NAME", "ENDPOINTS")
	} else {
		row(tw, "NAME", "ENDPOINTS")
	}
	for _, se := range list {
		ports := make([]int32, 0, len(se.Ports))
		for p := range se.Ports {
			ports = append(ports, p)
		}
		sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
		var addrs []string
		for _, p := range ports {
			for _, e := range se.Ports[p] {
				addrs = append(addrs, e.Address)
			}
		}
		text := "<none>"
		if len(addrs) > 3 {
			text = strings.Join(addrs[:3], ",") + fmt.Sprintf(" + %d more...", len(addrs)-3)
		} else if len(addrs) > 0 {
			text = strings.Join(addrs, ",")
		}
		if multi {
			row(tw, se.Namespace, se.Name, text)
		} else {
			row(tw, se.Name, text)
		}
	}
	return tw.Flush()
}

// printEvents prints kubectl get events' columns, oldest first.
func printEvents(w io.Writer, list *corev1.EventList, now time.Time) error {
	if len(list.Items) == 0 {
		_, err := fmt.Fprintln(w, "No events found")
		return err
	}
	items := append([]corev1.Event(nil), list.Items...)
	sort.SliceStable(items, func(i, j int) bool {
		return eventTime(&items[i]).Before(eventTime(&items[j]))
	})
	tw := newTable(w)
	row(tw, "LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE")
	for i := range items {
		ev := &items[i]
		seen := humanAge(eventTime(ev), now)
		if ev.Count > 1 {
			seen += fmt.Sprintf(" (x%d over %s)", ev.Count, humanAge(ev.FirstTimestamp.Time, now))
		}
		obj := strings.ToLower(ev.InvolvedObject.Kind) + "/" + ev.InvolvedObject.Name
		if c, ok := strings.CutPrefix(ev.InvolvedObject.FieldPath, "spec.containers{"); ok {
			obj += " (" + strings.TrimSuffix(c, "}") + ")"
		}
		// A message runs to the end of the line; a newline in it would
		// break the table.
		msg := strings.Join(strings.Fields(ev.Message), " ")
		row(tw, seen, ev.Type, ev.Reason, obj, msg)
	}
	return tw.Flush()
}

func eventTime(ev *corev1.Event) time.Time {
	if !ev.LastTimestamp.IsZero() {
		return ev.LastTimestamp.Time
	}
	return ev.CreationTimestamp.Time
}

// humanAge is the time since t in kubectl's short form: 45s, 3m12s, 95m,
// 5h12m, 30h, 3d4h, 20d, 2y40d.
func humanAge(t, now time.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	d := now.Sub(t)
	if d < -time.Second {
		return "<invalid>"
	}
	s := int(max(d, 0) / time.Second)
	m, h := s/60, s/3600
	both := func(a int, ua string, b int, ub string) string {
		if b == 0 {
			return strconv.Itoa(a) + ua
		}
		return strconv.Itoa(a) + ua + strconv.Itoa(b) + ub
	}
	switch {
	case s < 120:
		return strconv.Itoa(s) + "s"
	case m < 10:
		return both(m, "m", s%60, "s")
	case m < 180:
		return strconv.Itoa(m) + "m"
	case h < 8:
		return both(h, "h", m%60, "m")
	case h < 48:
		return strconv.Itoa(h) + "h"
	case h < 24*8:
		return both(h/24, "d", h%24, "h")
	case h < 24*365*2:
		return strconv.Itoa(h/24) + "d"
	case h < 24*365*8:
		return both(h/24/365, "y", (h/24)%365, "d")
	default:
		return strconv.Itoa(h/24/365) + "y"
	}
}

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}
