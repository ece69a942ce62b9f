package storagetest_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	storagev1 "github.com/fila-dev/filad/protos/fila/storage/v1"
	"github.com/fila-dev/filad/storage"
	"github.com/fila-dev/filad/storage/storagetest"
)

// stores opens each Store the wrappers are tested over.
var stores = []struct {
	name string
	open func(t *testing.T) storage.Store
}{
	{"memory", func(*testing.T) storage.Store { return storage.NewMemory() }},
	{"badger", func(t *testing.T) storage.Store {
		s, err := storage.Open(storage.Options{Dir: t.TempDir()})
		require.NoError(t, err)
		return s
	}},
}

func message(queue, id string) *storage.Batch {
	var b storage.Batch
	b.PutMessage(queue, id, &storagev1.MessageRecord{Payload: []byte(id)})
	return &b
}

// TestLateDeliversAfterSubmitReturnsInOrder: a completion never runs
// inside its Submit, and while one is being delivered, later Submits
// return and their completions wait behind it.
func TestLateDeliversAfterSubmitReturnsInOrder(t *testing.T) {
	t.Parallel()
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			s := storagetest.Late(st.open(t))
			defer func() { require.NoError(t, s.Close()) }()
			started, release := make(chan struct{}), make(chan struct{})
			order := make(chan int, 3)
			s.Submit(message("q", "0"), func(err error) {
				assert.NoError(t, err) // not FailNow: this is the deliverer
				close(started)
				<-release // holds the deliverer
				order <- 0
			})
			<-started
			for i := 1; i <= 2; i++ {
				s.Submit(message("q", string(rune('0'+i))), func(err error) {
					assert.NoError(t, err)
					order <- i
				})
			}
			select {
			case i := <-order:
				t.Fatalf("completion %d came while the one before it was being delivered", i)
			default:
			}
			close(release)
			for want := range 3 {
				require.Equal(t, want, <-order, "in commit order")
			}
			qc, err := s.LoadQueue("q")
			require.NoError(t, err)
			require.Len(t, qc.Messages, 3)
		})
	}
}

// TestUnknownAnswersOutcomeUnknownForThePicked: a picked batch completes
// with ErrOutcomeUnknown, applied or not as asked; the others as usual,
// and all in submission order.
func TestUnknownAnswersOutcomeUnknownForThePicked(t *testing.T) {
	t.Parallel()
	for _, st := range stores {
		for _, applied := range []bool{true, false} {
			t.Run(st.name+map[bool]string{true: "/applied", false: "/not applied"}[applied], func(t *testing.T) {
				t.Parallel()
				inner := st.open(t)
				defer func() { require.NoError(t, inner.Close()) }()
				s := storagetest.Unknown(inner, func(b *storage.Batch) bool { return b.Owner() == storage.FamilyOf("x") }, applied)
				type result struct {
					i   int
					err error
				}
				results := make(chan result, 3)
				for i, b := range []*storage.Batch{message("y", "1"), message("x", "2"), message("y", "3")} {
					s.Submit(b, func(err error) { results <- result{i, err} })
				}
				for i := range 3 {
					r := <-results
					require.Equal(t, i, r.i, "in submission order")
					if i == 1 {
						require.ErrorIs(t, r.err, storage.ErrOutcomeUnknown)
					} else {
						require.NoError(t, r.err)
					}
				}
				require.ErrorIs(t, s.Write(message("x", "4")), storage.ErrOutcomeUnknown, "Write too")
				x, err := s.LoadQueue("x")
				require.NoError(t, err)
				if applied {
					require.Len(t, x.Messages, 2)
				} else {
					require.Empty(t, x.Messages)
				}
				y, err := s.LoadQueue("y")
				require.NoError(t, err)
				require.Len(t, y.Messages, 2)
			})
		}
	}
}
