package plan

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Canonical returns v's canonical JSON: object keys sorted by byte order, no
// insignificant whitespace, no HTML escaping, numbers as encoding/json writes
// them (shortest round-trip form). Equal values give equal bytes.
func Canonical(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return canonicalJSON(raw)
}

func canonicalJSON(raw []byte) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// encoding/json writes map keys sorted and json.Number verbatim.
	if err := enc.Encode(tree); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ComputeHash returns "sha256:<hex>" over the canonical JSON of r without
// its hash field. Resolve sets Hash to this value.
func (r *Resolved) ComputeHash() (string, error) {
	c := *r
	c.Hash = ""
	raw, err := json.Marshal(&c)
	if err != nil {
		return "", err
	}
	var tree map[string]any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&tree); err != nil {
		return "", err
	}
	delete(tree, "hash")
	canon, err := Canonical(tree)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(canon)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// VerifyHash checks that r.Hash matches its content (e.g. after decoding a
// resolved plan received from elsewhere).
func (r *Resolved) VerifyHash() error {
	h, err := r.ComputeHash()
	if err != nil {
		return err
	}
	if h != r.Hash {
		return fmt.Errorf("plan: resolved plan hash %s does not match its content (%s)", r.Hash, h)
	}
	return nil
}
