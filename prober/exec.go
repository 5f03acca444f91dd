package prober

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// maxExecOutput caps the command output kept in a result message.
const maxExecOutput = 10 << 10

// execHandler probes exec through the target's ExecFunc (CRI ExecSync).
type execHandler struct {
	cmd     []string
	exec    ExecFunc
	timeout time.Duration
}

func newExecHandler(t *Target) handler {
	if t.Exec == nil {
		return errHandler{errors.New("exec probe: no exec function for this target")}
	}
	return &execHandler{cmd: t.Spec.Handler.Exec.Command, exec: t.Exec, timeout: t.Spec.Timeout}
}

func (h *execHandler) probe(ctx context.Context) (outcome, error) {
	code, out, err := h.exec(ctx, h.cmd, h.timeout)
	if len(out) > maxExecOutput {
		out = out[:maxExecOutput]
	}
	text := strings.TrimSpace(string(out))
	switch {
	case err != nil && (errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(ctx.Err(), context.DeadlineExceeded)):
		// timeoutSeconds is enforced for exec too (the kubelet's
		// ExecProbeTimeout): a command that overruns it fails the probe.
		return failure("command %q timed out after %s", h.cmd, h.timeout), nil
	case err != nil:
		return outcome{}, fmt.Errorf("exec probe command %q: %w", h.cmd, err)
	case code != 0:
		if text == "" {
			return failure("command %q exited with %d", h.cmd, code), nil
		}
		return failure("command %q exited with %d: %s", h.cmd, code, text), nil
	}
	return outcome{result: Success, output: text}, nil
}
