package kernels

import "golang.org/x/sys/cpu"

// HasAVX2 reports whether the CPU and OS support the AVX2 kernel set
// (AVX2 + FMA + F16C, with the OS saving YMM state).
var HasAVX2 = cpu.X86.HasAVX2 && cpu.X86.HasFMA && cpu.X86.HasAVX && cpu.X86.HasOSXSAVE && cpu.X86.HasF16C

// CPUFeatures lists the CPU features that matter to kernel selection.
func CPUFeatures() []string {
	var f []string
	add := func(ok bool, name string) {
		if ok {
			f = append(f, name)
		}
	}
	add(cpu.X86.HasAVX, "avx")
	add(cpu.X86.HasAVX2, "avx2")
	add(cpu.X86.HasFMA, "fma")
	add(cpu.X86.HasF16C, "f16c")
	add(cpu.X86.HasAVX512F, "avx512f")
	add(cpu.X86.HasAVX512VNNI, "avx512vnni")
	add(cpu.X86.HasAVXVNNI, "avxvnni")
	add(cpu.ARM64.HasASIMD, "neon")
	return f
}
