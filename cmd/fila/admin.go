package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"

	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// queueSubcommands: each with its positional arguments, its flags and what
// it does with an admin client.
type queueSubcommand struct {
	synopsis string
	args     int
	flags    func(fs *flag.FlagSet) func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error
}

var queueSubcommands = map[string]queueSubcommand{
	"create": {"queue create NAME [config flags]", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		cfg := configFlags(fs)
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			c, _ := cfg()
			resp, err := admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: pos[0], Config: c})
			if err != nil {
				return err
			}
			return e.show(resp, func() { fmt.Fprintf(e.stdout, "created queue %s\n", pos[0]) })
		}
	}},
	"update": {"queue update NAME [config flags]   (only the flags given change)", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		cfg := configFlags(fs)
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			c, paths := cfg()
			if len(paths) == 0 {
				return fmt.Errorf("queue update: give at least one config flag")
			}
			resp, err := admin.UpdateQueue(ctx, &filav1.UpdateQueueRequest{Name: pos[0], Config: c, UpdateMask: &fieldmaskpb.FieldMask{Paths: paths}})
			if err != nil {
				return err
			}
			return e.show(resp, func() { fmt.Fprintf(e.stdout, "updated queue %s: %s\n", pos[0], describeConfig(resp.GetConfig())) })
		}
	}},
	"delete": {"queue delete NAME   (deletes its dead-letter queue too)", 1, func(*flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			resp, err := admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: pos[0]})
			if err != nil {
				return err
			}
			return e.show(resp, func() { fmt.Fprintf(e.stdout, "deleted queue %s\n", pos[0]) })
		}
	}},
	"list": {"queue list", 0, func(*flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		return func(ctx context.Context, admin filav1.FilaAdminClient, _ []string, e env) error {
			resp, err := admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
			if err != nil || e.json {
				return e.showErr(resp, err)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "QUEUE\tDEPTH\tIN FLIGHT\tDELAYED\tCONSUMERS")
			for _, q := range resp.GetQueues() {
				fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\n", q.GetName(), q.GetDepth(), q.GetInFlight(), q.GetDelayed(), q.GetActiveConsumers())
			}
			return w.Flush()
		}
	}},
	"stats": {"queue stats NAME", 1, func(*flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			st, err := admin.GetStats(ctx, &filav1.GetStatsRequest{Queue: pos[0]})
			if err != nil {
				return err
			}
			return e.show(st, func() { printStats(e.stdout, pos[0], st) })
		}
	}},
	"redrive": {"queue redrive NAME.dlq [--count N]", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		count := fs.Uint64("count", 0, "most messages to move, oldest first (0: all)")
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			resp, err := admin.Redrive(ctx, &filav1.RedriveRequest{DlqQueue: pos[0], Count: *count})
			if err != nil {
				return err
			}
			return e.show(resp, func() {
				fmt.Fprintf(e.stdout, "redrove %d message(s) from %s to %s\n", resp.GetRedriven(), pos[0], strings.TrimSuffix(pos[0], ".dlq"))
			})
		}
	}},
	"peek": {"queue peek NAME [--limit N] [--payload]", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		limit := fs.Uint("limit", 20, "most messages to show")
		payload := fs.Bool("payload", false, "show payloads too (as text)")
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			resp, err := admin.Peek(ctx, &filav1.PeekRequest{Queue: pos[0], Limit: uint32(*limit), IncludePayload: *payload})
			if err != nil {
				return err
			}
			return e.show(resp, func() { printPeek(e.stdout, resp, *payload) })
		}
	}},
	"purge": {"queue purge NAME [--yes]   (deletes every message not leased)", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			if !*yes {
				// On stderr: stdout is the answer's (--json).
				fmt.Fprintf(e.stderr, "Delete every message of %s that is not leased? Type yes: ", pos[0])
				answer, _ := bufio.NewReader(e.stdin).ReadString('\n')
				if strings.TrimSpace(answer) != "yes" {
					return fmt.Errorf("purge of %s not confirmed; nothing deleted", pos[0])
				}
			}
			resp, err := admin.PurgeQueue(ctx, &filav1.PurgeQueueRequest{Queue: pos[0]})
			if err != nil {
				return err
			}
			return e.show(resp, func() { fmt.Fprintf(e.stdout, "purged %d message(s) from %s\n", resp.GetPurged(), pos[0]) })
		}
	}},
}

func queueCmd(ctx context.Context, g global, args []string, e env) int {
	var names []string
	for name := range queueSubcommands {
		names = append(names, name)
	}
	sort.Strings(names)
	if helpAsked(args, e, "queue "+strings.Join(names, "|")+" ...   (fila queue SUBCOMMAND --help for its flags)") {
		return exitOK
	}
	if len(args) == 0 {
		return usageErr(e, "queue needs a subcommand: %s", strings.Join(names, ", "))
	}
	sub, known := queueSubcommands[args[0]]
	if !known {
		return usageErr(e, "unknown queue subcommand %q (one of %s)", args[0], strings.Join(names, ", "))
	}
	fs := queueFlagSet(args[0])
	do := sub.flags(fs)
	pos, code, ok := parseCommand(fs, args[1:], e, sub.synopsis)
	if !ok {
		return code
	}
	e.json = jsonFlag(fs)
	if len(pos) != sub.args {
		return usageErr(e, "queue %s takes %d argument(s), got %d", args[0], sub.args, len(pos))
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error { return do(ctx, admin, pos, e) })
}

// queueFlagSet is the flag set of "queue SUB": sub's flags and --json.
func queueFlagSet(name string) *flag.FlagSet {
	fs := newFlagSet("queue " + name)
	addJSONFlag(fs)
	return fs
}

// adminCall connects, runs fn, and turns its error into the exit code.
func adminCall(ctx context.Context, g global, e env, fn func(filav1.FilaAdminClient) error) int {
	c, done, err := connect(ctx, g, e)
	if err != nil {
		return fail(e, err)
	}
	defer done()
	if err := fn(c.Admin()); err != nil {
		return fail(e, err)
	}
	return exitOK
}

// configFlags declares the queue config flags on fs; the returned func
// builds the config from them and names the fields the command line set.
func configFlags(fs *flag.FlagSet) func() (*filav1.QueueConfig, []string) {
	c := &filav1.QueueConfig{RetryBackoff: &filav1.RetryBackoff{}}
	// Only the flags declared here name config fields (not --json).
	others := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { others[f.Name] = true })
	fs.Uint64Var(&c.VisibilityTimeoutMs, "visibility-timeout-ms", 0, "lease duration (0: broker default)")
	fs.StringVar(&c.FairnessKeyHeader, "fairness-key-header", "", "header holding the fairness key (empty: broker default)")
	fs.Uint64Var(&c.MaxDepth, "max-depth", 0, "most messages held (0: unlimited)")
	fs.Uint64Var(&c.MaxBytes, "max-bytes", 0, "most payload bytes held (0: unlimited)")
	fs.Func("max-attempts", "deliveries before a message is dead-lettered (0: unlimited)", func(v string) error {
		var n uint32
		_, err := fmt.Sscan(v, &n)
		c.MaxAttempts = n
		return err
	})
	fs.Uint64Var(&c.RetryBackoff.InitialMs, "retry-initial-ms", 0, "delay before the first retry (0: retry at once)")
	fs.Uint64Var(&c.RetryBackoff.MaxMs, "retry-max-ms", 0, "longest retry delay (0: initial × multiplier^9)")
	fs.Float64Var(&c.RetryBackoff.Multiplier, "retry-multiplier", 0, "retry delay growth per attempt, 1..10 (0: 2)")
	deadLetter := fs.Bool("dead-letter", true, "move a message at max-attempts to NAME.dlq (false: delete it)")
	script := func(into *string) func(string) error {
		return func(v string) error {
			if path, ok := strings.CutPrefix(v, "@"); ok {
				b, err := os.ReadFile(path)
				if err != nil {
					return err
				}
				v = string(b)
			}
			*into = v
			return nil
		}
	}
	fs.Func("on-enqueue-script", "Lua defining on_enqueue(msg), or @FILE (\"\": none; docs/scripting.md)", script(&c.OnEnqueueScript))
	fs.Func("on-failure-script", "Lua defining on_failure(msg, err), or @FILE (\"\": none)", script(&c.OnFailureScript))
	return func() (*filav1.QueueConfig, []string) {
		paths := map[string]bool{}
		fs.Visit(func(f *flag.Flag) {
			if others[f.Name] {
				return
			}
			field := strings.ReplaceAll(f.Name, "-", "_")
			if strings.HasPrefix(field, "retry_") {
				field = "retry_backoff"
			}
			paths[field] = true
		})
		if paths["dead_letter"] {
			c.DeadLetter = deadLetter
		}
		if !paths["retry_backoff"] {
			c.RetryBackoff = nil
		}
		var out []string
		for p := range paths {
			out = append(out, p)
		}
		sort.Strings(out)
		return c, out
	}
}

func describeConfig(c *filav1.QueueConfig) string {
	s := fmt.Sprintf("visibility timeout %d ms, max attempts %d, dead letter %t, max depth %d, max bytes %d",
		c.GetVisibilityTimeoutMs(), c.GetMaxAttempts(), c.GetDeadLetter(), c.GetMaxDepth(), c.GetMaxBytes())
	if b := c.GetRetryBackoff(); b != nil {
		mult, limit := b.GetMultiplier(), fmt.Sprintf("%d ms", b.GetMaxMs())
		if mult == 0 {
			mult = 2
		}
		if b.GetMaxMs() == 0 {
			// As actors.Backoff.Delay caps it: initial × multiplier^9, at
			// most 24 h (actors.MaxDelay).
			d := min(time.Duration(float64(b.GetInitialMs())*math.Pow(mult, 9)*float64(time.Millisecond)), 24*time.Hour)
			limit = fmt.Sprintf("%s (initial × multiplier^9)", d.Round(time.Millisecond))
		}
		s += fmt.Sprintf(", retry backoff %d ms × %g up to %s", b.GetInitialMs(), mult, limit)
	}
	return s
}

func printStats(out io.Writer, queue string, st *filav1.GetStatsResponse) {
	fmt.Fprintf(out, "queue %s: depth %d, in flight %d, delayed %d, consumers %d, fairness keys %d, quantum %d\n",
		queue, st.GetDepth(), st.GetInFlight(), st.GetDelayed(), st.GetActiveConsumers(), st.GetActiveFairnessKeys(), st.GetQuantum())
	fmt.Fprintf(out, "config: %s\n", describeConfig(st.GetConfig()))
	if ts := st.GetPerThrottleStats(); len(ts) > 0 {
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "THROTTLE KEY\tTOKENS\tRATE/S\tBURST")
		for _, t := range ts {
			fmt.Fprintf(w, "%s\t%.1f\t%g\t%g\n", t.GetKey(), t.GetTokens(), t.GetRatePerSecond(), t.GetBurst())
		}
		_ = w.Flush()
	}
	keys := st.GetPerKeyStats()
	if len(keys) == 0 {
		return
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].GetKey() < keys[j].GetKey() })
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "FAIRNESS KEY\tPENDING\tWEIGHT\tDEFICIT")
	for _, k := range keys {
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\n", k.GetKey(), k.GetPendingCount(), k.GetWeight(), k.GetCurrentDeficit())
	}
	_ = w.Flush()
	if st.GetNextPageToken() != "" {
		fmt.Fprintf(out, "(the first %d of %d fairness keys)\n", len(keys), st.GetActiveFairnessKeys())
	}
}

func printPeek(out io.Writer, resp *filav1.PeekResponse, payload bool) {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tATTEMPTS\tBYTES\tREADY AT\tHEADERS")
	for _, m := range resp.GetMessages() {
		ready := "now"
		if m.GetReadyAt() != nil {
			ready = m.GetReadyAt().AsTime().Format(time.RFC3339)
		}
		var hs []string
		for k := range m.GetHeaders() {
			hs = append(hs, k)
		}
		sort.Strings(hs)
		for i, k := range hs {
			hs[i] = fmt.Sprintf("%s=%q", k, m.GetHeaders()[k])
		}
		fmt.Fprintf(w, "%s\t%d\t%d\t%s\t%s\n", m.GetId(), m.GetMetadata().GetAttemptCount(), m.GetPayloadSize(), ready, strings.Join(hs, " "))
		if payload {
			fmt.Fprintf(w, "\t\t\t\t%q\n", m.GetPayload())
		}
	}
	_ = w.Flush()
	if resp.GetNextPageToken() != "" {
		fmt.Fprintln(out, "(more messages follow; raise --limit to see them)")
	}
}

// subcommandSpec is one subcommand of config, throttle or key: its usage
// line, its least and most arguments, whether it prints data (and so takes
// --json), and its own flags.
type subcommandSpec struct {
	synopsis string
	min, max int
	json     bool
	flags    func(fs *flag.FlagSet) // nil: none
}

// flagSet is the subcommand's flag set, named for its errors and usage.
func (sc subcommandSpec) flagSet(name string) *flag.FlagSet {
	fs := newFlagSet(name)
	if sc.flags != nil {
		sc.flags(fs)
	}
	if sc.json {
		addJSONFlag(fs)
	}
	return fs
}

var configSubcommands = map[string]subcommandSpec{
	"set":  {synopsis: "config set KEY VALUE   (an empty VALUE deletes KEY)", min: 2, max: 2},
	"get":  {synopsis: "config get KEY", min: 1, max: 1, json: true},
	"list": {synopsis: "config list [PREFIX]", min: 0, max: 1, json: true},
}

func configCmd(ctx context.Context, g global, args []string, e env) int {
	sub, pos, code, ok := subcommand("config", args, &e, configSubcommands)
	if !ok {
		return code
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		switch sub {
		case "set":
			if _, err := admin.SetConfig(ctx, &filav1.SetConfigRequest{Key: pos[0], Value: pos[1]}); err != nil {
				return err
			}
			if pos[1] == "" {
				fmt.Fprintf(e.stdout, "deleted %s\n", pos[0])
			} else {
				fmt.Fprintf(e.stdout, "set %s=%s\n", pos[0], pos[1])
			}
			return nil
		case "get":
			resp, err := admin.GetConfig(ctx, &filav1.GetConfigRequest{Key: pos[0]})
			if err != nil {
				return err
			}
			return e.show(resp, func() { fmt.Fprintln(e.stdout, resp.GetValue()) })
		default:
			req := &filav1.ListConfigRequest{}
			if len(pos) == 1 {
				req.Prefix = pos[0]
			}
			resp, err := admin.ListConfig(ctx, req)
			if err != nil || e.json {
				return e.showErr(resp, err)
			}
			for _, en := range resp.GetEntries() {
				fmt.Fprintf(e.stdout, "%s=%s\n", en.GetKey(), en.GetValue())
			}
			if int(resp.GetTotalCount()) > len(resp.GetEntries()) {
				fmt.Fprintf(e.stdout, "(the first %d of %d keys; narrow the prefix)\n", len(resp.GetEntries()), resp.GetTotalCount())
			}
			return nil
		}
	})
}

var throttleSubcommands = map[string]subcommandSpec{
	"set":  {synopsis: "throttle set KEY RATE[,BURST]   (RATE in messages per second; BURST defaults to RATE)", min: 2, max: 2},
	"rm":   {synopsis: "throttle rm KEY", min: 1, max: 1},
	"list": {synopsis: "throttle list", json: true},
}

// throttleCmd manages throttle rates, which are runtime config keys
// "throttle.<key>" (docs/scripting.md).
func throttleCmd(ctx context.Context, g global, args []string, e env) int {
	sub, pos, code, ok := subcommand("throttle", args, &e, throttleSubcommands)
	if !ok {
		return code
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		switch sub {
		case "set", "rm":
			value := ""
			if sub == "set" {
				value = pos[1]
			}
			if _, err := admin.SetConfig(ctx, &filav1.SetConfigRequest{Key: "throttle." + pos[0], Value: value}); err != nil {
				return err
			}
			if sub == "set" {
				fmt.Fprintf(e.stdout, "throttle %s set to %s\n", pos[0], value)
			} else {
				fmt.Fprintf(e.stdout, "removed throttle %s\n", pos[0])
			}
			return nil
		default:
			resp, err := admin.ListConfig(ctx, &filav1.ListConfigRequest{Prefix: "throttle."})
			if err != nil || e.json {
				return e.showErr(resp, err)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "THROTTLE KEY\tRATE[,BURST]")
			for _, en := range resp.GetEntries() {
				fmt.Fprintf(w, "%s\t%s\n", strings.TrimPrefix(en.GetKey(), "throttle."), en.GetValue())
			}
			return w.Flush()
		}
	})
}

// helpAsked reports whether a command's first argument asks for its usage
// rather than naming a subcommand; it prints synopsis to stdout then.
func helpAsked(args []string, e env, synopsis string) bool {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help" || args[0] == "help") {
		fmt.Fprintf(e.stdout, "usage: fila %s\n", synopsis)
		return true
	}
	return false
}

// synopsisOf is the usage of every subcommand of subs, one a line.
func synopsisOf(subs map[string]subcommandSpec) string {
	var lines []string
	for _, name := range sortedKeys(subs) {
		lines = append(lines, subs[name].synopsis)
	}
	return strings.Join(lines, "\n       fila ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// subcommand parses "COMMAND SUB ARGS..." against subs, each subcommand
// with its own flags, and sets e.json from --json. ok is false when the
// command ends (help, or a usage error: code says which).
func subcommand(command string, args []string, e *env, subs map[string]subcommandSpec) (sub string, pos []string, code int, ok bool) {
	all := synopsisOf(subs)
	if helpAsked(args, *e, all) {
		return "", nil, exitOK, false
	}
	if len(args) == 0 {
		return "", nil, usageErr(*e, "%s needs a subcommand; usage:\n       fila %s", command, all), false
	}
	spec, known := subs[args[0]]
	if !known {
		return "", nil, usageErr(*e, "unknown %s subcommand %q; usage:\n       fila %s", command, args[0], all), false
	}
	fs := spec.flagSet(command + " " + args[0])
	if pos, code, ok = parseCommand(fs, args[1:], *e, spec.synopsis); !ok {
		return "", nil, code, false
	}
	if len(pos) < spec.min || len(pos) > spec.max {
		return "", nil, usageErr(*e, "usage: fila %s", spec.synopsis), false
	}
	e.json = jsonFlag(fs)
	return args[0], pos, exitOK, true
}

// keyOpts are the flags of the key subcommands, each declaring its own.
type keyOpts struct {
	perms      []*filav1.Permission
	expires    time.Duration
	superadmin bool
}

func (o *keyOpts) allowFlag(fs *flag.FlagSet) {
	fs.Func("allow", "a permission: queue pattern (name, prefix.* or *) = actions (produce, consume, admin); repeatable", func(v string) error {
		pattern, actions, ok := strings.Cut(v, "=")
		if !ok || pattern == "" || actions == "" {
			return fmt.Errorf("--allow %q: want PATTERN=ACTION[,ACTION]", v)
		}
		o.perms = append(o.perms, &filav1.Permission{QueuePattern: pattern, Actions: strings.Split(actions, ",")})
		return nil
	})
}

// keySubcommands are built per call: their flags write into o.
func keySubcommands(o *keyOpts) map[string]subcommandSpec {
	return map[string]subcommandSpec{
		"create": {synopsis: "key create NAME [--allow PATTERN=ACTION[,ACTION]]... [--superadmin] [--expires DURATION]   (no --allow: a key with no rights yet; grant them with key set-acl)",
			min: 1, max: 1, json: true, flags: func(fs *flag.FlagSet) {
				o.allowFlag(fs)
				fs.DurationVar(&o.expires, "expires", 0, "the key ends after this long (0: never)")
				fs.BoolVar(&o.superadmin, "superadmin", false, "the key passes every permission check")
			}},
		"revoke":  {synopsis: "key revoke NAME", min: 1, max: 1},
		"list":    {synopsis: "key list", json: true},
		"set-acl": {synopsis: "key set-acl KEY_ID [--allow PATTERN=ACTION[,ACTION]]...   (replaces the key's permissions; none: no rights)", min: 1, max: 1, flags: o.allowFlag},
		"get-acl": {synopsis: "key get-acl KEY_ID", min: 1, max: 1, json: true},
	}
}

// keyCmd manages API keys.
func keyCmd(ctx context.Context, g global, args []string, e env) int {
	o := &keyOpts{}
	sub, pos, code, ok := subcommand("key", args, &e, keySubcommands(o))
	if !ok {
		return code
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		switch sub {
		case "create":
			req := &filav1.CreateApiKeyRequest{Name: pos[0], Permissions: o.perms, IsSuperadmin: o.superadmin}
			if o.expires > 0 {
				req.ExpiresAtMs = uint64(time.Now().Add(o.expires).UnixMilli())
			}
			resp, err := admin.CreateApiKey(ctx, req)
			if err != nil {
				return err
			}
			rights := ""
			if len(o.perms) == 0 && !o.superadmin {
				rights = fmt.Sprintf(" with no permissions: it can do nothing until `fila key set-acl %s --allow PATTERN=ACTION`", resp.GetKeyId())
			}
			if err := e.show(resp, func() { fmt.Fprintln(e.stdout, resp.GetKey()) }); err != nil {
				return err
			}
			fmt.Fprintf(e.stderr, "created api key %s (key_id %s)%s; its secret is shown this once\n", resp.GetName(), resp.GetKeyId(), rights)
			return nil
		case "set-acl":
			req := &filav1.SetAclRequest{KeyId: pos[0]}
			for _, p := range o.perms {
				for _, a := range p.GetActions() {
					req.Permissions = append(req.Permissions, &filav1.AclPermission{Kind: a, Pattern: p.GetQueuePattern()})
				}
			}
			if _, err := admin.SetAcl(ctx, req); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "set %d permissions on api key %s\n", len(req.GetPermissions()), pos[0])
			return nil
		case "get-acl":
			resp, err := admin.GetAcl(ctx, &filav1.GetAclRequest{KeyId: pos[0]})
			if err != nil || e.json {
				return e.showErr(resp, err)
			}
			if resp.GetIsSuperadmin() {
				fmt.Fprintln(e.stdout, "superadmin")
			}
			for _, p := range resp.GetPermissions() {
				fmt.Fprintf(e.stdout, "%s=%s\n", p.GetPattern(), p.GetKind())
			}
			return nil
		case "revoke":
			_, err := admin.RevokeApiKey(ctx, &filav1.RevokeApiKeyRequest{Name: pos[0]})
			if err == nil {
				fmt.Fprintf(e.stdout, "revoked api key %s\n", pos[0])
			}
			return err
		default:
			resp, err := admin.ListApiKeys(ctx, &filav1.ListApiKeysRequest{})
			if err != nil || e.json {
				return e.showErr(resp, err)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tKEY ID\tFINGERPRINT\tEXPIRES\tPERMISSIONS")
			for _, k := range resp.GetKeys() {
				exp := "never"
				if ms := k.GetExpiresAtMs(); ms != 0 {
					exp = time.UnixMilli(int64(ms)).UTC().Format(time.RFC3339)
				}
				var ps []string
				if k.GetIsSuperadmin() {
					ps = append(ps, "superadmin")
				}
				for _, p := range k.GetPermissions() {
					ps = append(ps, p.GetQueuePattern()+"="+strings.Join(p.GetActions(), ","))
				}
				if len(ps) == 0 {
					ps = append(ps, "(none)")
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.GetName(), k.GetKeyId(), k.GetFingerprint(), exp, strings.Join(ps, " "))
			}
			return w.Flush()
		}
	})
}
