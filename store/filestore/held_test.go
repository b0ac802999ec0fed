package filestore

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

// A file held by another opener is refused after a short wait with an error that names the
// file and says what holds it.
func TestOpenHeldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.db")
	first, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Open(path, Options{})
	if !errors.Is(err, ErrHeld) {
		t.Fatalf("second Open = %v, want ErrHeld", err)
	}
	for _, want := range []string{path, "another keygate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "timeout") {
		t.Errorf("error %q still speaks of a timeout", err)
	}
}
