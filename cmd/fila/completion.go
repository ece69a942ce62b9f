package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Shell completion: the scripts are generated from the same flag sets the
// commands parse with, so a new flag or subcommand completes without a
// second list to keep.

// completionShells are the shells `fila completion` writes for.
var completionShells = []string{"bash", "fish", "zsh"}

// commandTree is each command's subcommands ("" for a command without any)
// with their flags' names.
func commandTree() map[string]map[string][]string {
	tree := map[string]map[string][]string{}
	add := func(cmd, sub string, fs *flag.FlagSet) {
		if tree[cmd] == nil {
			tree[cmd] = map[string][]string{}
		}
		names := []string{"help"}
		if fs != nil {
			fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		}
		sort.Strings(names)
		tree[cmd][sub] = names
	}
	for name, sub := range queueSubcommands {
		fs := queueFlagSet(name)
		sub.flags(fs)
		add("queue", name, fs)
	}
	for cmd, subs := range map[string]map[string]subcommandSpec{
		"config": configSubcommands, "throttle": throttleSubcommands, "key": keySubcommands(&keyOpts{}), "admin": adminSubcommands(new(bool)), "cluster": clusterSubcommands,
	} {
		for name, spec := range subs {
			add(cmd, name, spec.flagSet(cmd+" "+name))
		}
	}
	fs := newFlagSet("enqueue")
	enqueueFlags(fs)
	add("enqueue", "", fs)
	fs = newFlagSet("consume")
	consumeFlags(fs)
	add("consume", "", fs)
	for _, sh := range completionShells {
		add("completion", sh, nil)
	}
	return tree
}

func completionCmd(_ context.Context, _ global, args []string, e env) int {
	const synopsis = "completion bash|zsh|fish   (bash: source <(fila completion bash); zsh: the same in .zshrc; fish: fila completion fish | source)"
	if helpAsked(args, e, synopsis) {
		return exitOK
	}
	if len(args) != 1 {
		return usageErr(e, "usage: fila %s", synopsis)
	}
	switch args[0] {
	case "bash":
		writeBash(e.stdout)
	case "zsh":
		// zsh runs bash's completion functions through bashcompinit.
		fmt.Fprint(e.stdout, "#compdef fila\nautoload -U +X bashcompinit && bashcompinit\n")
		writeBash(e.stdout)
	case "fish":
		writeFish(e.stdout)
	default:
		return usageErr(e, "completion: unknown shell %q: bash, zsh or fish", args[0])
	}
	return exitOK
}

// dashed is a flag as it is typed: -H, --lines.
func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// globalFlagInfo is fila's flags before the command: every name, and those
// that take a value (which the scripts skip over).
func globalFlagInfo() (all, valued []string) {
	fs := globalFlags(&global{}, func(string) string { return "" })
	fs.VisitAll(func(f *flag.Flag) {
		all = append(all, dashed(f.Name))
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
			valued = append(valued, dashed(f.Name))
		}
	})
	return append(all, "--help"), valued
}

func writeBash(w io.Writer) {
	tree := commandTree()
	all, valued := globalFlagInfo()
	fmt.Fprintf(w, `# bash completion for fila: source <(fila completion bash)
_fila() {
    local cur=${COMP_WORDS[COMP_CWORD]} cmd="" sub="" i words=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case ${COMP_WORDS[i]} in
        %s) ((i++)) ;;
        -*) ;;
        *)
            if [[ -z $cmd ]]; then cmd=${COMP_WORDS[i]}; else sub=${COMP_WORDS[i]}; break; fi
            ;;
        esac
    done
    if [[ -z $cmd ]]; then
        if [[ $cur == -* ]]; then words=%q; else words=%q; fi
    else
        case $cmd in
`, strings.Join(valued, "|"), strings.Join(all, " "), strings.Join(append(sortedKeys(tree), "help"), " "))
	for _, cmd := range sortedKeys(tree) {
		subs := tree[cmd]
		fmt.Fprintf(w, "        %s)\n", cmd)
		if flags, flat := subs[""]; flat {
			fmt.Fprintf(w, "            [[ $cur == -* ]] && words=%q\n", dashedAll(flags))
			fmt.Fprint(w, "            ;;\n")
			continue
		}
		fmt.Fprintf(w, "            if [[ -z $sub ]]; then words=%q\n", strings.Join(sortedKeys(subs), " "))
		fmt.Fprint(w, "            elif [[ $cur == -* ]]; then\n                case $sub in\n")
		for _, sub := range sortedKeys(subs) {
			fmt.Fprintf(w, "                %s) words=%q ;;\n", sub, dashedAll(subs[sub]))
		}
		fmt.Fprint(w, "                esac\n            fi\n            ;;\n")
	}
	fmt.Fprint(w, `        esac
    fi
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _fila fila
`)
}

func dashedAll(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = dashed(n)
	}
	return strings.Join(out, " ")
}

func writeFish(w io.Writer) {
	tree := commandTree()
	cmds := sortedKeys(tree)
	fmt.Fprintln(w, "# fish completion for fila: fila completion fish | source")
	fmt.Fprintln(w, "complete -c fila -f")
	fs := globalFlags(&global{}, func(string) string { return "" })
	fs.VisitAll(func(f *flag.Flag) {
		fmt.Fprintf(w, "complete -c fila -n __fish_use_subcommand -l %s -d %q\n", f.Name, f.Usage)
	})
	fmt.Fprintf(w, "complete -c fila -n __fish_use_subcommand -a %q\n", strings.Join(append(cmds, "help"), " "))
	for _, cmd := range cmds {
		subs := tree[cmd]
		if flags, flat := subs[""]; flat {
			writeFishFlags(w, "__fish_seen_subcommand_from "+cmd, flags)
			continue
		}
		names := strings.Join(sortedKeys(subs), " ")
		fmt.Fprintf(w, "complete -c fila -n '__fish_seen_subcommand_from %s; and not __fish_seen_subcommand_from %s' -a %q\n", cmd, names, names)
		for _, sub := range sortedKeys(subs) {
			writeFishFlags(w, fmt.Sprintf("__fish_seen_subcommand_from %s; and __fish_seen_subcommand_from %s", cmd, sub), subs[sub])
		}
	}
}

func writeFishFlags(w io.Writer, cond string, flags []string) {
	for _, f := range flags {
		opt := "-l"
		if len(f) == 1 {
			opt = "-s"
		}
		fmt.Fprintf(w, "complete -c fila -n '%s' %s %s\n", cond, opt, f)
	}
}
