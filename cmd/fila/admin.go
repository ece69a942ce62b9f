package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
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
			if _, err := admin.CreateQueue(ctx, &filav1.CreateQueueRequest{Name: pos[0], Config: c}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "created queue %s\n", pos[0])
			return nil
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
			fmt.Fprintf(e.stdout, "updated queue %s: %s\n", pos[0], describeConfig(resp.GetConfig()))
			return nil
		}
	}},
	"delete": {"queue delete NAME   (deletes its dead-letter queue too)", 1, func(*flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			if _, err := admin.DeleteQueue(ctx, &filav1.DeleteQueueRequest{Queue: pos[0]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "deleted queue %s\n", pos[0])
			return nil
		}
	}},
	"list": {"queue list", 0, func(*flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		return func(ctx context.Context, admin filav1.FilaAdminClient, _ []string, e env) error {
			resp, err := admin.ListQueues(ctx, &filav1.ListQueuesRequest{})
			if err != nil {
				return err
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
			printStats(e.stdout, pos[0], st)
			return nil
		}
	}},
	"redrive": {"queue redrive NAME.dlq [--count N]", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		count := fs.Uint64("count", 0, "most messages to move, oldest first (0: all)")
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			resp, err := admin.Redrive(ctx, &filav1.RedriveRequest{DlqQueue: pos[0], Count: *count})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "redrove %d message(s) from %s to %s\n", resp.GetRedriven(), pos[0], strings.TrimSuffix(pos[0], ".dlq"))
			return nil
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
			printPeek(e.stdout, resp, *payload)
			return nil
		}
	}},
	"purge": {"queue purge NAME [--yes]   (deletes every message not leased)", 1, func(fs *flag.FlagSet) func(context.Context, filav1.FilaAdminClient, []string, env) error {
		yes := fs.Bool("yes", false, "do not ask for confirmation")
		return func(ctx context.Context, admin filav1.FilaAdminClient, pos []string, e env) error {
			if !*yes {
				fmt.Fprintf(e.stdout, "Delete every message of %s that is not leased? Type yes: ", pos[0])
				answer, _ := bufio.NewReader(e.stdin).ReadString('\n')
				if strings.TrimSpace(answer) != "yes" {
					return fmt.Errorf("purge of %s not confirmed; nothing deleted", pos[0])
				}
			}
			resp, err := admin.PurgeQueue(ctx, &filav1.PurgeQueueRequest{Queue: pos[0]})
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "purged %d message(s) from %s\n", resp.GetPurged(), pos[0])
			return nil
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
	fs := flag.NewFlagSet("queue "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	do := sub.flags(fs)
	pos, code, ok := parseCommand(fs, args[1:], e, sub.synopsis)
	if !ok {
		return code
	}
	if len(pos) != sub.args {
		return usageErr(e, "queue %s takes %d argument(s), got %d", args[0], sub.args, len(pos))
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error { return do(ctx, admin, pos, e) })
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
			limit = "initial × multiplier^9"
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

func configCmd(ctx context.Context, g global, args []string, e env) int {
	pos, code, ok := subcommand("config", args, e, "config set KEY VALUE | config get KEY | config list [PREFIX]   (set with an empty VALUE deletes)",
		map[string][2]int{"set": {2, 2}, "get": {1, 1}, "list": {0, 1}})
	if !ok {
		return code
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		switch args[0] {
		case "set":
			_, err := admin.SetConfig(ctx, &filav1.SetConfigRequest{Key: pos[0], Value: pos[1]})
			return err
		case "get":
			resp, err := admin.GetConfig(ctx, &filav1.GetConfigRequest{Key: pos[0]})
			if err == nil {
				fmt.Fprintln(e.stdout, resp.GetValue())
			}
			return err
		default:
			req := &filav1.ListConfigRequest{}
			if len(pos) == 1 {
				req.Prefix = pos[0]
			}
			resp, err := admin.ListConfig(ctx, req)
			if err != nil {
				return err
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

// throttleCmd manages throttle rates, which are runtime config keys
// "throttle.<key>" (docs/scripting.md).
func throttleCmd(ctx context.Context, g global, args []string, e env) int {
	pos, code, ok := subcommand("throttle", args, e, "throttle set KEY RATE[,BURST] | throttle rm KEY | throttle list   (RATE in messages per second)",
		map[string][2]int{"set": {2, 2}, "rm": {1, 1}, "list": {0, 0}})
	if !ok {
		return code
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		switch args[0] {
		case "set", "rm":
			value := ""
			if args[0] == "set" {
				value = pos[1]
			}
			_, err := admin.SetConfig(ctx, &filav1.SetConfigRequest{Key: "throttle." + pos[0], Value: value})
			return err
		default:
			resp, err := admin.ListConfig(ctx, &filav1.ListConfigRequest{Prefix: "throttle."})
			if err != nil {
				return err
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

// subcommand parses "COMMAND SUB ARGS..." for a command whose subcommands
// take no flags: want gives each one's least and most arguments. ok is
// false when the command ends (help, or a usage error: code says which).
func subcommand(command string, args []string, e env, synopsis string, want map[string][2]int) (pos []string, code int, ok bool) {
	if helpAsked(args, e, synopsis) {
		return nil, exitOK, false
	}
	if len(args) == 0 {
		return nil, usageErr(e, "usage: fila %s", synopsis), false
	}
	fs := flag.NewFlagSet(command+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if pos, code, ok = parseCommand(fs, args[1:], e, synopsis); !ok {
		return nil, code, false
	}
	n, known := want[args[0]]
	switch {
	case !known:
		return nil, usageErr(e, "unknown %s subcommand %q; usage: fila %s", command, args[0], synopsis), false
	case len(pos) < n[0] || len(pos) > n[1]:
		return nil, usageErr(e, "usage: fila %s", synopsis), false
	}
	return pos, exitOK, true
}

// keyCmd manages API keys.
func keyCmd(ctx context.Context, g global, args []string, e env) int {
	const synopsis = "key create NAME [--allow PATTERN=ACTION[,ACTION]]... [--superadmin] [--expires DURATION] | key revoke NAME | key list | key set-acl KEY_ID [--allow PATTERN=ACTION[,ACTION]]... | key get-acl KEY_ID"
	if helpAsked(args, e, synopsis) {
		return exitOK
	}
	if len(args) == 0 {
		return usageErr(e, "usage: fila %s", synopsis)
	}
	fs := flag.NewFlagSet("key "+args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var perms []*filav1.Permission
	fs.Func("allow", "a permission: queue pattern (name, prefix.* or *) = actions (produce, consume, admin); repeatable", func(v string) error {
		pattern, actions, ok := strings.Cut(v, "=")
		if !ok || pattern == "" || actions == "" {
			return fmt.Errorf("--allow %q: want PATTERN=ACTION[,ACTION]", v)
		}
		perms = append(perms, &filav1.Permission{QueuePattern: pattern, Actions: strings.Split(actions, ",")})
		return nil
	})
	expires := fs.Duration("expires", 0, "the key ends after this long (0: never)")
	superadmin := fs.Bool("superadmin", false, "the key passes every permission check")
	pos, code, ok := parseCommand(fs, args[1:], e, synopsis)
	if !ok {
		return code
	}
	want := map[string]int{"create": 1, "revoke": 1, "list": 0, "set-acl": 1, "get-acl": 1}
	if n, known := want[args[0]]; !known || len(pos) != n {
		return usageErr(e, "usage: fila %s", synopsis)
	}
	return adminCall(ctx, g, e, func(admin filav1.FilaAdminClient) error {
		switch args[0] {
		case "create":
			req := &filav1.CreateApiKeyRequest{Name: pos[0], Permissions: perms, IsSuperadmin: *superadmin}
			if *expires > 0 {
				req.ExpiresAtMs = uint64(time.Now().Add(*expires).UnixMilli())
			}
			resp, err := admin.CreateApiKey(ctx, req)
			if err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, resp.GetKey())
			fmt.Fprintf(e.stderr, "created api key %s (key_id %s); the line above is its secret, shown this once\n", resp.GetName(), resp.GetKeyId())
			return nil
		case "set-acl":
			req := &filav1.SetAclRequest{KeyId: pos[0]}
			for _, p := range perms {
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
			if err != nil {
				return err
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
			if err != nil {
				return err
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
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", k.GetName(), k.GetKeyId(), k.GetFingerprint(), exp, strings.Join(ps, " "))
			}
			return w.Flush()
		}
	})
}
