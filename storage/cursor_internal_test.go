package storage

import (
	"bytes"
	"fmt"
	"math/rand"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The writer's lookups through a cursor kept for the transaction answer as
// bbolt's Bucket.Get and delete as Bucket.Delete, at every point of a
// transaction that puts and deletes around them (enough keys for the
// buckets to span many pages, and keys past either end of the bucket).
func TestCursorLookupsAreBucketLookups(t *testing.T) {
	db, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rng := rand.New(rand.NewSource(1))
	index := map[string]bool{} // what the index bucket holds
	key := func() []byte { return fmt.Appendf(nil, "k%05d", rng.Intn(20000)) }
	for round := range 5 {
		err := db.Update(func(tx *bolt.Tx) error {
			root, err := tx.CreateBucketIfNotExists([]byte("p"))
			if err != nil {
				return err
			}
			pb := &partBuckets{root: root}
			for _, n := range [][]byte{bucketSagas, bucketIdem, bucketIndex} {
				if _, err := root.CreateBucketIfNotExists(n); err != nil {
					return err
				}
			}
			pb.sagas, pb.idem, pb.index = root.Bucket(bucketSagas), root.Bucket(bucketIdem), root.Bucket(bucketIndex)
			for i := range 20000 {
				k := key()
				if i%97 == 0 {
					k = []byte{"a\xff"[i%2]} // before and after every key
				}
				switch rng.Intn(5) {
				case 0, 1:
					v := fmt.Appendf(nil, "v%d-%d", round, i)
					if err := pb.sagas.Put(k, v); err != nil {
						return err
					}
					if err := pb.idem.Put(k, v); err != nil {
						return err
					}
					if err := pb.index.Put(k, nil); err != nil {
						return err
					}
					index[string(k)] = true
				case 2:
					if err := pb.sagas.Delete(k); err != nil {
						return err
					}
					if err := pb.idem.Delete(k); err != nil {
						return err
					}
				case 3:
					// Index values are empty: bbolt's Get answers nil for a
					// key put in this transaction, so look the key up.
					has := func() bool { got, _ := pb.index.Cursor().Seek(k); return bytes.Equal(got, k) }
					had := has()
					if err := pb.deleteIndex(k); err != nil {
						return err
					}
					if has() {
						return fmt.Errorf("deleteIndex(%s) left the key (it was there: %v)", k, had)
					}
					delete(index, string(k))
				default:
					if got, want := pb.getSaga(k), pb.sagas.Get(k); !bytes.Equal(got, want) || (got == nil) != (want == nil) {
						return fmt.Errorf("getSaga(%s) = %q, Bucket.Get = %q", k, got, want)
					}
					if got, want := pb.getIdem(k), pb.idem.Get(k); !bytes.Equal(got, want) || (got == nil) != (want == nil) {
						return fmt.Errorf("getIdem(%s) = %q, Bucket.Get = %q", k, got, want)
					}
				}
			}
			// deleteIndex deleted its key and no other.
			n := 0
			if err := pb.index.ForEach(func(k, _ []byte) error {
				n++
				if !index[string(k)] {
					return fmt.Errorf("index key %s was deleted, but is there", k)
				}
				return nil
			}); err != nil {
				return err
			}
			if n != len(index) {
				return fmt.Errorf("the index holds %d keys, want %d: deleteIndex deleted others", n, len(index))
			}
			// Every key of the buckets, and none more, is found.
			for _, b := range []struct {
				bucket *bolt.Bucket
				get    func([]byte) []byte
			}{{pb.sagas, pb.getSaga}, {pb.idem, pb.getIdem}} {
				n := 0
				if err := b.bucket.ForEach(func(k, v []byte) error {
					n++
					if got := b.get(k); !bytes.Equal(got, v) {
						return fmt.Errorf("key %s: %q, stored %q", k, got, v)
					}
					return nil
				}); err != nil {
					return err
				}
				if n == 0 {
					return fmt.Errorf("round %d: an empty bucket tests nothing", round)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}
