package gateway

import (
	"cmp"
	"encoding/base64"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

// Per-key statistics (and Peek's messages) come in pages: 600 fairness
// keys of 8 KiB made a 4.9 MB GetStats answer, over a gRPC client's default
// receive limit.
const (
	// DefaultKeyPage is the page size when a GetStats or Peek asks for 0.
	DefaultKeyPage = 100
	// MaxKeyPage is the largest page a GetStats or Peek may ask for.
	MaxKeyPage = 1000
)

// pageLimit checks a page size a request asked for: 0 means the default.
func pageLimit(limit uint32) (int, error) {
	switch {
	case limit == 0:
		return DefaultKeyPage, nil
	case limit > MaxKeyPage:
		return 0, invalid("limit: %d is over the limit of %d", limit, MaxKeyPage)
	}
	return int(limit), nil
}

// keyPage sorts keys by order and returns the page after token (from the
// start when empty) of at most limit keys, and the token of the next page
// ("" on the last). A token is the position of the page's last key, so a
// page never repeats or skips a key that stays active between calls.
func keyPage(keys []actors.KeyStats, order filav1.KeySort, limit uint32, token string) ([]actors.KeyStats, string, error) {
	n, err := pageLimit(limit)
	if err != nil {
		return nil, "", err
	}
	limit = uint32(n)
	compare := func(a, b actors.KeyStats) int { return strings.Compare(a.Key, b.Key) }
	switch order {
	case filav1.KeySort_KEY_SORT_KEY:
	case filav1.KeySort_KEY_SORT_PENDING:
		compare = func(a, b actors.KeyStats) int {
			return cmp.Or(cmp.Compare(b.Pending, a.Pending), strings.Compare(a.Key, b.Key))
		}
	default:
		return nil, "", invalid("sort: unknown value %d", order)
	}
	keys = slices.Clone(keys)
	slices.SortFunc(keys, compare)
	if token != "" {
		after, err := decodeKeyToken(token, order)
		if err != nil {
			return nil, "", err
		}
		start, _ := slices.BinarySearchFunc(keys, after, compare)
		if start < len(keys) && compare(keys[start], after) == 0 {
			start++
		}
		keys = keys[start:]
	}
	if len(keys) <= int(limit) {
		return keys, "", nil
	}
	page := keys[:limit]
	return page, encodeKeyToken(page[len(page)-1], order), nil
}

func encodeKeyToken(last actors.KeyStats, order filav1.KeySort) string {
	raw := fmt.Sprintf("%d|%d|%s", order, last.Pending, last.Key)
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

func decodeKeyToken(token string, order filav1.KeySort) (actors.KeyStats, error) {
	bad := invalid("page_token: not a token from this GetStats' sort")
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return actors.KeyStats{}, bad
	}
	parts := strings.SplitN(string(raw), "|", 3)
	if len(parts) != 3 || parts[0] != strconv.Itoa(int(order)) {
		return actors.KeyStats{}, bad
	}
	pending, err := strconv.Atoi(parts[1])
	if err != nil {
		return actors.KeyStats{}, bad
	}
	return actors.KeyStats{Key: parts[2], Pending: pending}, nil
}
