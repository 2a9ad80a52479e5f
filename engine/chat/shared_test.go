package chat

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// findShared locates the shared reference data: $LLM_ENGINE_SHARED, else
// ../shared from the repository root.
func findShared() string {
	for _, d := range []string{os.Getenv("LLM_ENGINE_SHARED"), "../../../shared", "../../shared"} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, "templates", "renderings.json")); err == nil {
			return d
		}
	}
	return ""
}

// sharedTemplates returns shared/templates, skipping loudly without it.
func sharedTemplates(t testing.TB) string {
	t.Helper()
	if d := findShared(); d != "" {
		return filepath.Join(d, "templates")
	}
	msg := fmt.Sprintf("!!!!! SKIPPING %s: shared reference data not found (set LLM_ENGINE_SHARED, or put it at ../shared from the repository root): transformers chat-template renderings NOT checked !!!!!", t.Name())
	fmt.Fprintln(os.Stderr, msg)
	t.Skip(msg)
	return ""
}

// referenceNow is the instant the reference renderings froze strftime_now
// at.
var referenceNow = time.Date(2024, 7, 26, 0, 0, 0, 0, time.UTC)

type rendering struct {
	Template            string         `json:"template"`
	Conversation        string         `json:"conversation"`
	AddGenerationPrompt bool           `json:"add_generation_prompt"`
	BOSToken            *string        `json:"bos_token"`
	EOSToken            *string        `json:"eos_token"`
	ExtraVars           map[string]any `json:"extra_vars"`
	Rendered            *string        `json:"rendered"`
	Error               *string        `json:"error"`
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// compileFile compiles templates/<name> of dir once per test.
func compileFile(t testing.TB, cache map[string]*Template, dir, name string) *Template {
	t.Helper()
	if tm, ok := cache[name]; ok {
		return tm
	}
	src, err := os.ReadFile(filepath.Join(dir, "templates", name))
	if err != nil {
		t.Fatal(err)
	}
	tm, err := Compile(string(src))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	cache[name] = tm
	return tm
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// checkRendering compares a Render result with a reference record's
// rendering or error; it returns "" when they agree.
func checkRendering(got string, err error, wantText, wantErr *string) string {
	if wantErr != nil {
		var te *TemplateError
		switch {
		case err == nil:
			return fmt.Sprintf("rendered %q, want template error %q", got, *wantErr)
		case !errors.As(err, &te):
			return fmt.Sprintf("error %v (%T), want *TemplateError %q", err, err, *wantErr)
		case te.Message != *wantErr:
			return fmt.Sprintf("template error %q, want %q", te.Message, *wantErr)
		}
		return ""
	}
	if err != nil {
		return fmt.Sprintf("error: %v", err)
	}
	if got != *wantText {
		return "rendering differs:\n" + firstDiff(got, *wantText)
	}
	return ""
}

// firstDiff describes where two strings first differ.
func firstDiff(got, want string) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	from := max(0, i-60)
	return fmt.Sprintf("  at byte %d\n  got:  %q\n  want: %q", i, got[from:min(len(got), i+60)], want[from:min(len(want), i+60)])
}

// TestSharedRenderings renders every record of shared/templates/
// renderings.json (eight vendors' templates × conversations ×
// add_generation_prompt, rendered by Python's Jinja2 set up like
// transformers) and requires the same bytes, or the same template error.
func TestSharedRenderings(t *testing.T) {
	dir := sharedTemplates(t)
	var recs []rendering
	readJSON(t, filepath.Join(dir, "renderings.json"), &recs)
	var convs []struct {
		ID       string    `json:"id"`
		Messages []Message `json:"messages"`
	}
	readJSON(t, filepath.Join(dir, "conversations.json"), &convs)
	byID := map[string][]Message{}
	for _, c := range convs {
		byID[c.ID] = c.Messages
	}
	if len(recs) == 0 {
		t.Fatal("no renderings")
	}

	cache := map[string]*Template{}
	match, errs := 0, 0
	perTemplate := map[string][2]int{}
	for _, r := range recs {
		msgs, ok := byID[r.Conversation]
		if !ok {
			t.Fatalf("%s: unknown conversation %q", r.Template, r.Conversation)
		}
		tm := compileFile(t, cache, dir, r.Template)
		got, err := tm.Render(msgs, RenderOptions{
			AddGenerationPrompt: r.AddGenerationPrompt,
			BOSToken:            deref(r.BOSToken),
			EOSToken:            deref(r.EOSToken),
			Extra:               r.ExtraVars,
			Now:                 referenceNow,
		})
		pt := perTemplate[r.Template]
		pt[1]++
		if msg := checkRendering(got, err, r.Rendered, r.Error); msg != "" {
			t.Errorf("%s %s add_generation_prompt=%v: %s", r.Template, r.Conversation, r.AddGenerationPrompt, msg)
		} else {
			match++
			pt[0]++
			if r.Error != nil {
				errs++
			}
		}
		perTemplate[r.Template] = pt
	}
	var lines []string
	for name, pt := range perTemplate {
		lines = append(lines, fmt.Sprintf("  %-45s %d/%d", name, pt[0], pt[1]))
	}
	sort.Strings(lines)
	t.Logf("%d/%d shared renderings reproduced byte for byte (%d of them the expected template error):\n%s",
		match, len(recs), errs, strings.Join(lines, "\n"))
}
