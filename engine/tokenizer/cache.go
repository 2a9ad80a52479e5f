package tokenizer

import "sync"

// wordCache memoizes the token ids of pre-tokenized words (BPE) and
// space-delimited segments (SPM). Tokenizing a word depends on nothing but
// the word, so this changes no result; it only saves the merge loop for
// words seen before, as Hugging Face's tokenizers do.
type wordCache struct {
	mu       sync.RWMutex
	m        map[string][]int32
	disabled bool
}

const (
	cacheMaxEntries = 1 << 15
	cacheMaxWordLen = 48
)

func (c *wordCache) get(word []byte) ([]int32, bool) {
	if c.disabled || len(word) > cacheMaxWordLen {
		return nil, false
	}
	c.mu.RLock()
	ids, ok := c.m[string(word)]
	c.mu.RUnlock()
	return ids, ok
}

func (c *wordCache) getString(word string) ([]int32, bool) {
	if c.disabled || len(word) > cacheMaxWordLen {
		return nil, false
	}
	c.mu.RLock()
	ids, ok := c.m[word]
	c.mu.RUnlock()
	return ids, ok
}

func (c *wordCache) putBytes(word []byte, ids []int32) {
	if c.disabled || len(word) > cacheMaxWordLen {
		return
	}
	c.put(string(word), ids)
}

func (c *wordCache) put(word string, ids []int32) {
	if c.disabled || len(word) > cacheMaxWordLen {
		return
	}
	cp := append([]int32(nil), ids...)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= cacheMaxEntries {
		c.m = make(map[string][]int32, 1024)
	}
	c.m[word] = cp
	c.mu.Unlock()
}
