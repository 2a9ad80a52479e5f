package gguf

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Open memory-maps and parses the GGUF file at path. Anything but a regular
// file (a directory, a FIFO, a device) is refused before it is read.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("gguf: %s is not a regular file (%s)", path, st.Mode().Type())
	}
	size := st.Size()
	if size < 24 {
		return nil, &Error{Offset: 0, Msg: fmt.Sprintf("%s: file too short for a GGUF header (%d bytes)", path, size)}
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("gguf: %s is too large to map", path)
	}
	data, err := unix.Mmap(int(fh.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.closer = func() error { return unix.Munmap(data) }
	return f, nil
}
