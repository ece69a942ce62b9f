package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"
	"unicode"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// newFlagSet is a command's flag set: errors are returned, not printed.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return fs
}

// addJSONFlag declares --json on fs; jsonFlag reads it after parsing.
func addJSONFlag(fs *flag.FlagSet) {
	fs.Bool("json", false, "print the answer as one JSON object (fila.v1's field names)")
}

func jsonFlag(fs *flag.FlagSet) bool {
	f := fs.Lookup("json")
	return f != nil && f.Value.String() == "true"
}

// show prints m as JSON with --json, else runs text.
func (e env) show(m proto.Message, text func()) error {
	if e.json {
		return printJSON(e.stdout, m)
	}
	text()
	return nil
}

// showErr returns err, or with --json prints m.
func (e env) showErr(m proto.Message, err error) error {
	if err != nil {
		return err
	}
	return e.show(m, func() {})
}

// printJSON writes m, a fila.v1 answer, as one line of JSON: every field
// under its proto name, set or not; 64-bit integers as JSON numbers (not
// the strings of proto3's JSON mapping, so `jq '.depth > 100'` compares
// numbers); timestamps as RFC 3339; bytes as base64.
func printJSON(w io.Writer, m proto.Message) error {
	return json.NewEncoder(w).Encode(jsonOf(m.ProtoReflect()))
}

func jsonOf(m protoreflect.Message) any {
	if m.Descriptor().FullName() == "google.protobuf.Timestamp" {
		fs := m.Descriptor().Fields()
		sec, nanos := m.Get(fs.ByName("seconds")).Int(), m.Get(fs.ByName("nanos")).Int()
		return time.Unix(sec, nanos).UTC().Format(time.RFC3339Nano)
	}
	out := map[string]any{}
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.ContainingOneof() != nil && !m.Has(fd) {
			continue // an unset oneof member is not an empty one
		}
		out[string(fd.Name())] = jsonField(fd, m, m.Get(fd))
	}
	return out
}

func jsonField(fd protoreflect.FieldDescriptor, m protoreflect.Message, v protoreflect.Value) any {
	switch {
	case fd.IsList():
		l := v.List()
		items := make([]any, l.Len())
		for i := range items {
			items[i] = jsonScalar(fd, l.Get(i))
		}
		return items
	case fd.IsMap():
		out := map[string]any{}
		v.Map().Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
			out[k.String()] = jsonScalar(fd.MapValue(), v)
			return true
		})
		return out
	case fd.Message() != nil && !m.Has(fd):
		return nil
	}
	return jsonScalar(fd, v)
}

func jsonScalar(fd protoreflect.FieldDescriptor, v protoreflect.Value) any {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return jsonOf(v.Message())
	case protoreflect.EnumKind:
		if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
			return string(ev.Name())
		}
		return int32(v.Enum())
	case protoreflect.BytesKind:
		return v.Bytes() // encoding/json writes base64
	}
	return v.Interface()
}

// payloadText is how text consume shows a payload: the text itself, quoted
// as Go quotes it so a newline or a quote cannot break the line, up to
// maxShownPayload bytes; or, for bytes that are not printable text, a hint
// to --json, which has them all as base64.
func payloadText(p []byte) string {
	if len(p) == 0 {
		return `""`
	}
	if !printable(p) {
		return "(binary; --json shows it as payload_base64)"
	}
	if len(p) <= maxShownPayload {
		return strconv.Quote(string(p))
	}
	cut := maxShownPayload
	for cut > 0 && !utf8.RuneStart(p[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d more bytes; --json shows them all)", strconv.Quote(string(p[:cut])), len(p)-cut)
}

// maxShownPayload is the most payload bytes text consume shows.
const maxShownPayload = 512

// printable reports whether p is UTF-8 text of printable characters and
// ordinary white space.
func printable(p []byte) bool {
	for len(p) > 0 {
		r, n := utf8.DecodeRune(p)
		if r == utf8.RuneError && n == 1 || !unicode.IsPrint(r) && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
		p = p[n:]
	}
	return true
}
