package gateway

import (
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/fila-dev/filad/actors"
	filav1 "github.com/fila-dev/filad/protos/fila/v1"
)

func TestKeyPages(t *testing.T) {
	t.Parallel()
	var keys []actors.KeyStats
	for i := range 250 {
		keys = append(keys, actors.KeyStats{Key: fmt.Sprintf("k%03d", i), Pending: i % 7})
	}
	tests := []struct {
		name  string
		order filav1.KeySort
		limit uint32
		pages int
		first string
	}{
		{"by key, default page", filav1.KeySort_KEY_SORT_KEY, 0, 3, "k000"},
		{"by key, pages of 40", filav1.KeySort_KEY_SORT_KEY, 40, 7, "k000"},
		{"by pending, pages of 40", filav1.KeySort_KEY_SORT_PENDING, 40, 7, "k006"},
		{"one page holds all", filav1.KeySort_KEY_SORT_PENDING, 1000, 1, "k006"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var all []actors.KeyStats
			token, pages := "", 0
			for {
				page, next, err := keyPage(keys, tt.order, tt.limit, token)
				require.NoError(t, err)
				pages++
				all = append(all, page...)
				if next == "" {
					break
				}
				token = next
			}
			require.Equal(t, tt.pages, pages)
			require.Len(t, all, len(keys), "every key once")
			seen := map[string]bool{}
			for i, k := range all {
				require.False(t, seen[k.Key], "%s twice", k.Key)
				seen[k.Key] = true
				if i > 0 && tt.order == filav1.KeySort_KEY_SORT_PENDING {
					require.GreaterOrEqual(t, all[i-1].Pending, k.Pending, "most pending first")
				}
			}
			require.Equal(t, tt.first, all[0].Key)
		})
	}
}

func TestKeyPageRefusesBadInput(t *testing.T) {
	t.Parallel()
	keys := []actors.KeyStats{{Key: "a"}, {Key: "b"}}
	_, next, err := keyPage(keys, filav1.KeySort_KEY_SORT_KEY, 1, "")
	require.NoError(t, err)
	_, _, err = keyPage(keys, filav1.KeySort_KEY_SORT_PENDING, 1, next)
	require.ErrorContains(t, err, "page_token", "a token is tied to its sort")
	_, _, err = keyPage(keys, filav1.KeySort_KEY_SORT_KEY, 1, "%%%")
	require.ErrorContains(t, err, "page_token")
	_, _, err = keyPage(keys, filav1.KeySort_KEY_SORT_KEY, 1001, "")
	require.ErrorContains(t, err, "limit: 1001 is over the limit of 1000")
	_, _, err = keyPage(keys, filav1.KeySort(9), 1, "")
	require.ErrorContains(t, err, "sort")
}
