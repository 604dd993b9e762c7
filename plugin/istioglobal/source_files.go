package istioglobal

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coredns-istio/coredns-istio/internal/debounce"
	"github.com/fsnotify/fsnotify"
	networkingv1 "istio.io/client-go/pkg/apis/networking/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// fileSettleDelay is how long after the last of a burst of file events the files are read again.
const fileSettleDelay = 50 * time.Millisecond

// fileSource serves ServiceEntries from YAML or JSON files: multi-document files, and the
// *.yaml, *.yml and *.json files of directories. A change to any of them (including a ConfigMap
// volume's symlink swap) has them all read again, and the entries that differ applied.
type fileSource struct {
	paths   []string
	watcher *fsnotify.Watcher
	done    chan struct{}

	changed  atomic.Bool // the files changed since the last read
	last     snapshots
	problems []Problem // of the last read
}

func newFileSource(paths []string) *fileSource { return &fileSource{paths: paths} }

// checkReadable is the setup-time check that a files path exists.
func checkReadable(path string) error {
	_, err := os.Stat(path)
	return err
}

func (f *fileSource) start(notify func()) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	for _, dir := range f.watchedDirs() {
		if err := w.Add(dir); err != nil {
			w.Close()
			return fmt.Errorf("files: watching %s: %v", dir, err)
		}
	}
	f.watcher = w
	f.done = make(chan struct{})
	f.changed.Store(true)
	// A save is several events (create, write, chmod, a ConfigMap volume's symlink swap): tell
	// the builder once they have stopped, so that it reads the files once, whole.
	settle := debounce.New(fileSettleDelay, 10*fileSettleDelay, 0)
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		for {
			select {
			case _, ok := <-w.Events:
				if !ok {
					return
				}
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warningf("files: watch: %v", err) // an overflow may have hidden a change
			}
			settle.Signal()
		}
	}()
	go func() {
		defer close(f.done)
		for settle.Wait(closed) {
			f.changed.Store(true)
			notify()
		}
	}()
	notify()
	return nil
}

// watchedDirs are the directories given, and the directories of the files given: editors and
// ConfigMap volumes replace files by renaming, which a watch on the file itself would miss.
func (f *fileSource) watchedDirs() []string {
	var dirs []string
	for _, p := range f.paths {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			p = filepath.Dir(p)
		}
		if !slices.Contains(dirs, p) {
			dirs = append(dirs, p)
		}
	}
	return dirs
}

func (f *fileSource) stop() {
	if f.watcher != nil {
		f.watcher.Close()
		<-f.done
	}
}

func (f *fileSource) synced() bool { return true }

// changes reads every file again after a change to any, and returns the entries that differ
// from the last read.
func (f *fileSource) changes() ([]change, []Problem) {
	if !f.changed.Swap(false) {
		return nil, f.problems
	}
	entries, problems := f.entries()
	f.problems = problems
	return f.last.diff(entries), problems
}

// snapshots turns successive complete lists of entries into changes. A namespace/name listed
// twice is two entries, told apart by their order.
type snapshots struct{ last map[entryID]*Entry }

func (s *snapshots) diff(entries []Entry) []change {
	next := make(map[entryID]*Entry, len(entries))
	dups := make(map[string]int32)
	var out []change
	for i := range entries {
		e := &entries[i]
		id := entryID{key: e.key()}
		id.dup = dups[id.key]
		dups[id.key]++
		if old, ok := s.last[id]; ok && old.same(e) {
			next[id] = old
			continue
		}
		// A copy of its own: the engine keeps an entry until it changes, and a pointer into
		// entries would keep every entry of this read alive with it.
		cp := *e
		next[id] = &cp
		out = append(out, change{id: id, entry: &cp})
	}
	for id := range s.last {
		if _, ok := next[id]; !ok {
			out = append(out, change{id: id})
		}
	}
	s.last = next
	return out
}

func (f *fileSource) entries() ([]Entry, []Problem) {
	var entries []Entry
	var problems []Problem
	for _, p := range f.paths {
		files, err := yamlFiles(p)
		if err != nil {
			problems = append(problems, unreadable(p, err))
			continue
		}
		for _, file := range files {
			e, ps := readFile(file)
			entries = append(entries, e...)
			problems = append(problems, ps...)
		}
	}
	return entries, problems
}

// yamlFiles returns path itself, or the YAML and JSON files directly in it, sorted.
func yamlFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	des, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasPrefix(name, "."): // editors' swap files, a ConfigMap volume's ..data
		case strings.HasSuffix(name, ".yaml"), strings.HasSuffix(name, ".yml"), strings.HasSuffix(name, ".json"):
			files = append(files, filepath.Join(path, name))
		}
	}
	return files, nil
}

// readFile returns the ServiceEntries of one file. Documents of other kinds (the
// DestinationRules that usually sit beside them) are ignored; a document that cannot be read
// is a problem that costs only itself.
func readFile(file string) ([]Entry, []Problem) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, []Problem{unreadable(file, err)}
	}
	return readDocuments(file, data)
}

// readDocuments returns the ServiceEntries of the YAML or JSON documents in data, read from file.
func readDocuments(file string, data []byte) ([]Entry, []Problem) {
	var entries []Entry
	var problems []Problem
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("%s#%d", file, doc)
		if err != nil {
			problems = append(problems, unreadable(where, err))
			break
		}
		se, err := decodeServiceEntry(raw)
		switch {
		case err != nil:
			problems = append(problems, unreadable(where, err))
		case se != nil:
			if se.Namespace == "" {
				se.Namespace = "default" // as kubectl apply without -n
			}
			entries = append(entries, entryFrom(se))
		}
	}
	return entries, problems
}

// decodeServiceEntry decodes one document: nil for an empty document or another kind.
func decodeServiceEntry(raw []byte) (*networkingv1.ServiceEntry, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return nil, err
	}
	if tm.Kind != "ServiceEntry" {
		return nil, nil
	}
	switch tm.APIVersion {
	case "networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3":
	default:
		return nil, fmt.Errorf("apiVersion %q is not networking.istio.io/v1, v1beta1 or v1alpha3", tm.APIVersion)
	}
	se := &networkingv1.ServiceEntry{}
	if err := yaml.Unmarshal(raw, se); err != nil {
		return nil, err
	}
	if se.Name == "" {
		return nil, fmt.Errorf("metadata.name is missing")
	}
	return se, nil
}

func unreadable(where string, err error) Problem {
	return Problem{Kind: kindEntry, Reason: reasonUnparsable, Entry: where, Detail: err.Error()}
}
