using System.IO.MemoryMappedFiles;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// A read-only weight file. A view (<see cref="Map"/>) maps only the byte range it needs and unmaps it when disposed,
/// so touching a tensor never leaves the rest of the checkpoint resident in this process. A copy (<see cref="Read"/>)
/// reads the file instead (pread): one copy from the page cache, without a mapping to set up, fault in and tear down
/// (each unmap interrupts the other cores to flush their TLBs); w4 quantize of the 0.5B shape, which copies every
/// bf16 row block it quantizes, 628 -> 520 ms. Thread-safe.
/// </summary>
internal sealed class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly Microsoft.Win32.SafeHandles.SafeFileHandle? _handle; // Read's

    public MappedFile(string path)
    {
        Path = path;
        try
        {
            Length = LlmBuild.Core.IO.LinkedFile.Resolve(path).Length;
            if (Length > 0) _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            if (Length > 0) _handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _map?.Dispose(); // opened before the handle failed
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot open '{path}': {e.Message}", path, e);
        }
    }

    public string Path { get; }
    public long Length { get; }

    /// <summary>Maps [offset, offset + length); the caller disposes the view.</summary>
    public View Map(long offset, long length)
    {
        CheckRange(offset, length);
        return length == 0 ? new View(null, 0) : new View(_map!.CreateViewAccessor(offset, length, MemoryMappedFileAccess.Read), length);
    }

    /// <summary>Copies bytes of the file into <paramref name="destination"/>.</summary>
    public void Read(long offset, Span<byte> destination)
    {
        CheckRange(offset, destination.Length);
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(_handle!, destination, offset);
            if (n <= 0)
                throw new LlmBuildException(ErrorCodes.ReadFailed, $"'{Path}' ended at offset {offset}, short of the {Length} bytes it had when opened: it changed while it was read. Build again.", Path);
            destination = destination[n..];
            offset += n;
        }
    }

    private void CheckRange(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new LlmBuildException(ErrorCodes.BadTensorOffsets,
                $"Read of {length} bytes at offset {offset} is outside '{Path}' ({Length} bytes). The file is truncated or corrupt; download it again.", Path);
    }

    public void Dispose()
    {
        _map?.Dispose();
        _handle?.Dispose();
    }

    /// <summary>A mapped byte range, valid until disposed.</summary>
    public sealed unsafe class View : IDisposable
    {
        private readonly MemoryMappedViewAccessor? _accessor;
        private readonly byte* _pointer;

        internal View(MemoryMappedViewAccessor? accessor, long length)
        {
            _accessor = accessor;
            Length = length;
            if (accessor is null) return;
            byte* p = null;
            accessor.SafeMemoryMappedViewHandle.AcquirePointer(ref p);
            _pointer = p + accessor.PointerOffset;
        }

        public long Length { get; }

        /// <summary>The whole range (at most 2 GiB − 1; use <see cref="Slice"/> beyond that).</summary>
        public ReadOnlySpan<byte> Span => Slice(0, checked((int)Length));

        public ReadOnlySpan<byte> Slice(long start, int length)
        {
            if (start < 0 || length < 0 || start + length > Length) throw new ArgumentOutOfRangeException(nameof(start));
            return length == 0 ? default : new ReadOnlySpan<byte>(_pointer + start, length);
        }

        public void Dispose()
        {
            if (_accessor is null) return;
            _accessor.SafeMemoryMappedViewHandle.ReleasePointer();
            _accessor.Dispose();
        }
    }
}
