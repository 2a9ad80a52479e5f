package chat

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/ardanlabs/jinja"
)

// Expected values below are Python 3.11's.

func TestPyFloatRepr(t *testing.T) {
	for _, c := range []struct {
		f    float64
		want string
	}{
		{0.0, "0.0"}, {math.Copysign(0, -1), "-0.0"}, {1.0, "1.0"}, {-1.5, "-1.5"},
		{0.1, "0.1"}, {0.25, "0.25"}, {1.0 / 3, "0.3333333333333333"}, {2.0 / 3, "0.6666666666666666"},
		{1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {123456789012345678.0, "1.2345678901234568e+17"},
		{1234567890123456.0, "1234567890123456.0"}, {1e-4, "0.0001"}, {1e-5, "1e-05"}, {1.5e-5, "1.5e-05"},
		{1e20, "1e+20"}, {1e21, "1e+21"}, {1e22, "1e+22"}, {1e100, "1e+100"}, {5e-324, "5e-324"},
		{1.7976931348623157e308, "1.7976931348623157e+308"}, {100.0, "100.0"}, {12345.678, "12345.678"},
		{0.000123, "0.000123"}, {3.14159, "3.14159"}, {2.5e-7, "2.5e-07"}, {9007199254740992.0, "9007199254740992.0"},
		{math.Inf(1), "inf"}, {math.Inf(-1), "-inf"}, {math.NaN(), "nan"},
	} {
		if got := pyFloatRepr(c.f); got != c.want {
			t.Errorf("pyFloatRepr(%v) = %q, want %q", c.f, got, c.want)
		}
	}
}

func TestTojsonFilter(t *testing.T) {
	v, err := decodeJSON([]byte(`{"b": [1, 2.0, -0.5, 1e20, null, true], "a": {"é": "<&>'\"\\\n\u0001\u007f\u2028🚀"}, "e": {}, "l": []}`))
	if err != nil {
		t.Fatal(err)
	}
	kw := func(kv ...any) map[string]jinja.Value {
		m := map[string]jinja.Value{}
		for i := 0; i < len(kv); i += 2 {
			x, err := toValue(kv[i+1])
			if err != nil {
				t.Fatal(err)
			}
			m[kv[i].(string)] = x
		}
		return m
	}
	for _, c := range []struct {
		kwargs map[string]jinja.Value
		want   string
	}{
		{nil, `{"b": [1, 2.0, -0.5, 1e+20, null, true], "a": {"é": "<&>'\"\\\n\u0001` + "\u007f\u2028🚀" + `"}, "e": {}, "l": []}`},
		{kw("ensure_ascii", true), `{"b": [1, 2.0, -0.5, 1e+20, null, true], "a": {"\u00e9": "<&>'\"\\\n\u0001\u007f\u2028\ud83d\ude80"}, "e": {}, "l": []}`},
		{kw("sort_keys", true, "separators", []any{",", ":"}), `{"a":{"é":"<&>'\"\\\n\u0001` + "\u007f\u2028🚀" + `"},"b":[1,2.0,-0.5,1e+20,null,true],"e":{},"l":[]}`},
		{kw("indent", 2), "{\n  \"b\": [\n    1,\n    2.0,\n    -0.5,\n    1e+20,\n    null,\n    true\n  ],\n  \"a\": {\n    \"é\": \"<&>'\\\"\\\\\\n\\u0001\u007f\u2028🚀\"\n  },\n  \"e\": {},\n  \"l\": []\n}"},
		{kw("indent", "\t"), "{\n\t\"b\": [\n\t\t1,\n\t\t2.0,\n\t\t-0.5,\n\t\t1e+20,\n\t\tnull,\n\t\ttrue\n\t],\n\t\"a\": {\n\t\t\"é\": \"<&>'\\\"\\\\\\n\\u0001\u007f\u2028🚀\"\n\t},\n\t\"e\": {},\n\t\"l\": []\n}"},
	} {
		got, err := tojsonFilter([]jinja.Value{v}, c.kwargs)
		if err != nil {
			t.Fatal(err)
		}
		if got.AsString() != c.want {
			t.Errorf("tojson(%v):\n got %s\nwant %s", c.kwargs, got.AsString(), c.want)
		}
	}
	if _, err := tojsonFilter([]jinja.Value{jinja.Undefined()}, nil); err == nil {
		t.Error("tojson(undefined) should fail like json.dumps(Undefined)")
	}
	if _, err := tojsonFilter([]jinja.Value{v}, kw("bogus", 1)); err == nil {
		t.Error("tojson with an unknown keyword should fail")
	}
}

func TestStrftime(t *testing.T) {
	const all = "%H:%M:%S %p %I %j %y %e %a %w %u %U %W %V %G %g %C %D %F %T %R %h %k %l %s %f %Z%z %% %q"
	for _, c := range []struct {
		at, format, want string
	}{
		{"2024-07-26T00:00:00.000000", "%d %b %Y", "26 Jul 2024"},
		{"2024-07-26T00:00:00.000000", "%A, %B %-d, %Y", "Friday, July 26, 2024"},
		{"2024-07-26T00:00:00.000000", all, "00:00:00 AM 12 208 24 26 Fri 5 5 29 30 30 2024 24 20 07/26/24 2024-07-26 00:00:00 00:00 Jul  0 12 1721952000 000000  % %q"},
		{"2024-07-26T00:00:00.000000", "%-m/%-d %-H:%-M", "7/26 0:0"},
		{"2024-07-26T00:00:00.000000", "%_d|%0e|%c|%x|%X", "26|26|Fri Jul 26 00:00:00 2024|07/26/24|00:00:00"},
		{"2025-01-05T13:07:09.123456", all, "13:07:09 PM 01 005 25  5 Sun 0 7 01 00 01 2025 25 20 01/05/25 2025-01-05 13:07:09 13:07 Jan 13  1 1736082429 123456  % %q"},
		{"2025-01-05T13:07:09.123456", "%-m/%-d %-H:%-M", "1/5 13:7"},
		{"2025-01-05T13:07:09.123456", "%_d|%0e|%c|%x|%X", " 5|05|Sun Jan  5 13:07:09 2025|01/05/25|13:07:09"},
		{"2023-12-31T23:59:59.000000", all, "23:59:59 PM 11 365 23 31 Sun 0 7 53 52 52 2023 23 20 12/31/23 2023-12-31 23:59:59 23:59 Dec 23 11 1704067199 000000  % %q"},
		{"2021-01-01T09:05:03.000000", all, "09:05:03 AM 09 001 21  1 Fri 5 5 00 00 53 2020 20 20 01/01/21 2021-01-01 09:05:03 09:05 Jan  9  9 1609491903 000000  % %q"},
		{"2021-01-01T09:05:03.000000", "%_d|%0e|%c|%x|%X", " 1|01|Fri Jan  1 09:05:03 2021|01/01/21|09:05:03"},
	} {
		at, err := time.Parse("2006-01-02T15:04:05.000000", c.at)
		if err != nil {
			t.Fatal(err)
		}
		if got := strftime(at, c.format); got != c.want {
			t.Errorf("strftime(%s, %q) =\n %q, want\n %q", c.at, c.format, got, c.want)
		}
	}
}

func TestPyRepr(t *testing.T) {
	v, err := decodeJSON([]byte(`[1, 2.0, null, true, "it's", "say \"hi\"", "both ' \"", "tab\tnl\n\u0001é\u00a0", {"k": [false]}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := `[1, 2.0, None, True, "it's", 'say "hi"', 'both \' "', 'tab\tnl\n\x01é\xa0', {'k': [False]}]`
	if got := pyStr(v); got != want {
		t.Errorf("repr:\n got %s\nwant %s", got, want)
	}
	if got := pyStr(jinja.Undefined()); got != "" {
		t.Errorf("str(undefined) = %q", got)
	}
	if !strings.Contains(pyStr(jinja.NewFloat(1)), "1.0") {
		t.Error("str(1.0)")
	}
}
