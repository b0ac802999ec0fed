package redisstore

import (
	"strings"
	"testing"
)

func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    Config
		want string // "" : valid
	}{
		{"url", Config{URL: "redis://127.0.0.1:6379/2"}, ""},
		{"addr", Config{Addrs: []string{"127.0.0.1:6379"}, DB: 3}, ""},
		{"sentinel", Config{Addrs: []string{"a:1", "b:2"}, MasterName: "m", DB: 1}, ""},
		{"cluster", Config{Addrs: []string{"a:1", "b:2"}}, ""},
		{"nothing", Config{}, "needs a URL or addrs"},
		{"url and addrs", Config{URL: "redis://x:1", Addrs: []string{"a:1"}}, "not both"},
		{"bad url", Config{URL: "http://user:hunter2@x"}, "invalid redis URL"},
		{"cluster db", Config{Addrs: []string{"a:1", "b:2"}, DB: 1}, "no databases"},
		{"negative db", Config{Addrs: []string{"a:1"}, DB: -1}, "negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Check()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Check() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Check() = %v, want an error saying %q", err, tc.want)
			case err != nil && strings.Contains(err.Error(), "hunter2"):
				t.Fatalf("the error echoes the password: %v", err)
			}
		})
	}
}

func TestDialRefusesAnEmptyHashTagPrefix(t *testing.T) {
	if _, err := Dial(Config{Addrs: []string{"127.0.0.1:1"}}, Options{KeyPrefix: "{}x"}); err == nil {
		t.Fatal("Dial took the key prefix {}x")
	}
}
