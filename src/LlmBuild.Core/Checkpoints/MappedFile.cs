using System.IO.MemoryMappedFiles;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Checkpoints;

/// <summary>
/// A read-only memory-mapped weight file. Each read maps only the byte range it needs and unmaps it afterwards,
/// so touching a tensor never leaves the rest of the checkpoint resident in this process. Thread-safe.
/// </summary>
internal sealed class MappedFile : IDisposable
{
    private readonly MemoryMappedFile? _map;

    public MappedFile(string path)
    {
        Path = path;
        try
        {
            Length = LlmBuild.Core.IO.LinkedFile.Resolve(path).Length;
            if (Length > 0) _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot open '{path}': {e.Message}", path, e);
        }
    }

    public string Path { get; }
    public long Length { get; }

    /// <summary>Maps [offset, offset + length); the caller disposes the view.</summary>
    public View Map(long offset, long length)
    {
        if (offset < 0 || length < 0 || offset + length > Length)
            throw new LlmBuildException(ErrorCodes.BadTensorOffsets,
                $"Read of {length} bytes at offset {offset} is outside '{Path}' ({Length} bytes). The file is truncated or corrupt; download it again.", Path);
        return length == 0 ? new View(null, 0) : new View(_map!.CreateViewAccessor(offset, length, MemoryMappedFileAccess.Read), length);
    }

    /// <summary>Copies bytes of the file into <paramref name="destination"/>.</summary>
    public void Read(long offset, Span<byte> destination)
    {
        using var view = Map(offset, destination.Length);
        view.Span.CopyTo(destination);
    }

    public void Dispose() => _map?.Dispose();

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
