package gguf

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// Open memory-maps and parses the GGUF file at path. Anything but a regular
// file (a directory, a FIFO, a socket, a device) is refused without reading
// from it and without blocking: the path is checked with stat first, then
// opened with O_NONBLOCK (so a FIFO swapped in meanwhile cannot block the
// open) and checked again with fstat on the descriptor actually opened.
//
// The map is read-only and shared: if another process truncates the file
// while it is mapped, reading the lost pages raises SIGBUS. Model files must
// be replaced atomically (rename), never rewritten in place.
func Open(path string) (*File, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, notRegular(path, st.Mode())
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("gguf: open %s: %w", path, err)
	}
	defer unix.Close(fd)
	var fst unix.Stat_t
	if err := unix.Fstat(fd, &fst); err != nil {
		return nil, fmt.Errorf("gguf: fstat %s: %w", path, err)
	}
	if fst.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("gguf: %s changed into a non-regular file while being opened: %w", path, ErrNotRegular)
	}
	size := fst.Size
	if size < headerSize {
		// Too small to map usefully (and mmap refuses 0 bytes): read it.
		buf := make([]byte, size)
		n, err := unix.Pread(fd, buf, 0)
		if err != nil {
			return nil, fmt.Errorf("gguf: read %s: %w", path, err)
		}
		_, err = Parse(buf[:n])
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("gguf: %s is too large to map (%d bytes)", path, size)
	}
	data, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("gguf: mmap %s: %w", path, err)
	}
	f, err := Parse(data)
	if err != nil {
		unix.Munmap(data)
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	f.mapped = true
	f.closer = func() error { return unix.Munmap(data) }
	return f, nil
}

// ErrNotRegular is wrapped by Open's error for paths that are not regular
// files.
var ErrNotRegular = errors.New("not a regular file")

func notRegular(path string, m fs.FileMode) error {
	kind := "special file"
	switch {
	case m.IsDir():
		kind = "directory"
	case m&fs.ModeNamedPipe != 0:
		kind = "FIFO"
	case m&fs.ModeSocket != 0:
		kind = "socket"
	case m&fs.ModeCharDevice != 0:
		kind = "character device"
	case m&fs.ModeDevice != 0:
		kind = "block device"
	}
	return fmt.Errorf("gguf: %s is a %s: %w", path, kind, ErrNotRegular)
}
