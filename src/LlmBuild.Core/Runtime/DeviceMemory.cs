using System.Runtime.InteropServices;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Runtime;

/// <summary>A range of the emulated device memory (what bmruntime calls a <c>bm_device_mem_t</c>).</summary>
public readonly record struct DeviceMem(long Offset, long Size)
{
    public DeviceMem Slice(long offset, long size)
    {
        if (offset < 0 || size < 0 || offset + size > Size) throw new ArgumentOutOfRangeException(nameof(offset), $"[{offset}, +{size}] is outside a {Size}-byte device memory.");
        return new DeviceMem(Offset + offset, size);
    }
}

/// <summary>
/// The emulated device memory: one native, 64-byte aligned, zero-initialised buffer allocated once, carved by a bump
/// allocator at the chip's alignment. Everything a model needs (coefficients, ctx, io, KV cache) lives in it.
/// </summary>
public sealed unsafe class DeviceMemory : IDisposable
{
    private byte* _allocation;
    private byte* _base;
    private long _used;

    public DeviceMemory(long capacity, int alignment)
    {
        if (capacity <= 0) throw new ArgumentOutOfRangeException(nameof(capacity));
        Capacity = capacity;
        Alignment = alignment;
        // Zeroed by the allocator (fresh pages for a large block), so the memory a model reserves but never touches — a
        // generous ctx, a KV cache a short chat leaves empty — costs address space, not resident memory. 64 bytes of
        // slack give the 64-byte alignment the kernels' vector loads like.
        _allocation = (byte*)NativeMemory.AllocZeroed((nuint)capacity + 64);
        _base = (byte*)(((nuint)_allocation + 63) & ~(nuint)63);
    }

    public long Capacity { get; }
    public int Alignment { get; }
    public long Used => _used;

    public DeviceMem Allocate(long size)
    {
        long start = (_used + Alignment - 1) / Alignment * Alignment;
        if (start + size > Capacity)
            throw new LlmBuildException(ErrorCodes.DeviceMemoryOverflow, $"The emulator's device memory is exhausted: {size} bytes requested, {Capacity - start} of {Capacity} left.");
        _used = start + size;
        return new DeviceMem(start, size);
    }

    /// <summary>Pointer to a device offset (valid until disposal).</summary>
    internal byte* Pointer(long offset)
    {
        ObjectDisposedException.ThrowIf(_base == null, this);
        return _base + offset;
    }

    public Span<byte> Bytes(DeviceMem mem)
    {
        Check(mem.Offset, mem.Size);
        return new Span<byte>(Pointer(mem.Offset), checked((int)mem.Size));
    }

    public Span<T> Span<T>(DeviceMem mem) where T : unmanaged => MemoryMarshal.Cast<byte, T>(Bytes(mem));

    public void Write<T>(DeviceMem mem, ReadOnlySpan<T> data) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(data);
        if (bytes.Length > mem.Size) throw new ArgumentException($"{bytes.Length} bytes do not fit a {mem.Size}-byte device memory.", nameof(data));
        bytes.CopyTo(Bytes(mem));
    }

    /// <summary>Device-to-device copy (bm_memcpy_d2d).</summary>
    public void Copy(DeviceMem destination, DeviceMem source, long bytes)
    {
        if (bytes > destination.Size || bytes > source.Size) throw new ArgumentOutOfRangeException(nameof(bytes));
        Buffer.MemoryCopy(Pointer(source.Offset), Pointer(destination.Offset), bytes, bytes);
    }

    private void Check(long offset, long size)
    {
        if (offset < 0 || size < 0 || offset + size > Capacity)
            throw new LlmBuildException(ErrorCodes.NotEmulatorModel, $"Device memory access [{offset}, +{size}] is outside the {Capacity}-byte device memory; the program is damaged.");
    }

    public void Dispose()
    {
        if (_allocation != null)
        {
            NativeMemory.Free(_allocation);
            _allocation = null;
            _base = null;
        }
    }
}
