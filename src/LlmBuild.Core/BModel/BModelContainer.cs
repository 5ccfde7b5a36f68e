using System.Buffers;
using System.IO.MemoryMappedFiles;
using System.Security.Cryptography;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.BModel;

/// <summary>
/// A bmodel opened for reading: its header and model, plus access to the binaries, which are read lazily from the
/// memory-mapped file (or from the caller's memory). Binary references were checked against the blob when the file
/// was opened.
/// </summary>
public sealed unsafe class BModelContainer : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _pointer;
    private readonly ReadOnlyMemory<byte> _memory;
    private readonly long _blobStart;

    private BModelContainer(string name, BModelHeader header, BModelFile model, long fileLength, long blobStart,
        MemoryMappedFile? map, MemoryMappedViewAccessor? view, byte* pointer, ReadOnlyMemory<byte> memory)
    {
        Name = name; Header = header; Model = model; FileLength = fileLength; _blobStart = blobStart;
        _map = map; _view = view; _pointer = pointer; _memory = memory;
    }

    /// <summary>The file path, or the name given for an in-memory bmodel.</summary>
    public string Name { get; }
    public BModelHeader Header { get; }
    public BModelFile Model { get; }
    public long FileLength { get; }

    /// <summary>Length of the binary blob after the flatbuffer.</summary>
    public long BlobLength => FileLength - _blobStart;

    internal static BModelContainer Open(string path)
    {
        string full = Path.GetFullPath(path);
        long length;
        try { length = new FileInfo(full).Length; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{full}': {e.Message.TrimEnd('.')}.", full, e);
        }
        if (!File.Exists(full)) throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{full}': the file does not exist.", full);
        if (length < BModelHeader.Size)
            BModelReader.ParseHeader([], length, full, out _); // throws the coded error for short files

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        byte* pointer = null;
        try
        {
            map = MemoryMappedFile.CreateFromFile(full, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            pointer += view.PointerOffset;
            var start = new ReadOnlySpan<byte>(pointer, BModelHeader.Size);
            var header = BModelReader.ParseHeader(start, length, full, out long blobLength);
            byte[] flatBuffer = new ReadOnlySpan<byte>(pointer + header.HeaderSize, (int)header.FlatBufferSize).ToArray();
            var model = BModelReader.Decode(flatBuffer, blobLength, full);
            return new BModelContainer(full, header, model, length, length - blobLength, map, view, pointer, default);
        }
        catch (Exception e)
        {
            if (pointer != null) view!.SafeMemoryMappedViewHandle.ReleasePointer();
            view?.Dispose();
            map?.Dispose();
            if (e is IOException or UnauthorizedAccessException)
                throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{full}': {e.Message.TrimEnd('.')}.", full, e);
            throw;
        }
    }

    internal static BModelContainer FromMemory(ReadOnlyMemory<byte> bytes, string? name)
    {
        string label = name ?? "<memory>";
        var header = BModelReader.ParseHeader(bytes.Span, bytes.Length, label, out long blobLength);
        byte[] flatBuffer = bytes.Span.Slice((int)header.HeaderSize, (int)header.FlatBufferSize).ToArray();
        var model = BModelReader.Decode(flatBuffer, blobLength, label);
        return new BModelContainer(label, header, model, bytes.Length, bytes.Length - blobLength, null, null, null, bytes);
    }

    /// <summary>The bytes of a binary (at most 2 GiB each).</summary>
    public ReadOnlySpan<byte> GetSpan(BinaryRef binary)
    {
        long offset = CheckRange(binary);
        if (_map is null) return _memory.Span.Slice((int)offset, (int)binary.Size);
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new ReadOnlySpan<byte>(_pointer + offset, (int)binary.Size);
    }

    /// <summary>The bytes of a binary as memory that stays valid until the container is disposed.</summary>
    public ReadOnlyMemory<byte> GetMemory(BinaryRef binary)
    {
        long offset = CheckRange(binary);
        if (_map is null) return _memory.Slice((int)offset, (int)binary.Size);
        ObjectDisposedException.ThrowIf(_pointer == null, this);
        return new MappedMemory(_pointer + offset, (int)binary.Size).Memory;
    }

    public byte[] ReadBinary(BinaryRef binary) => GetSpan(binary).ToArray();

    private long CheckRange(BinaryRef binary)
    {
        if (binary.Start > (ulong)BlobLength || binary.Size > (ulong)BlobLength - binary.Start)
            throw new LlmBuildException(ErrorCodes.BModelBinaryOutOfRange, $"'{Name}': binary {binary} lies outside the {BlobLength}-byte blob.", Name);
        if (binary.Size > int.MaxValue)
            throw new LlmBuildException(ErrorCodes.BModelBinaryOutOfRange, $"'{Name}': binary {binary} is larger than 2 GiB and cannot be viewed at once.", Name);
        return _blobStart + (long)binary.Start;
    }

    /// <summary>
    /// Checks every coefficient blob against its sha256 check code. A blob several nets share (block_i and block_cache_i)
    /// is hashed once.
    /// </summary>
    public void VerifyCheckCodes()
    {
        var hashes = new Dictionary<BinaryRef, byte[]>();
        foreach (var net in Model.Nets)
            for (int s = 0; s < net.Stages.Count; s++)
            {
                if (net.Stages[s].CoeffMem is not { BinaryCoeff: { } bin, CheckCode.Count: > 0 } coeff) continue;
                if (!hashes.TryGetValue(bin, out byte[]? hash)) hashes[bin] = hash = SHA256.HashData(GetSpan(bin));
                if (!hash.AsSpan().SequenceEqual(coeff.CheckCode.ToArray()))
                    throw new LlmBuildException(ErrorCodes.BModelCheckCodeMismatch,
                        $"'{Name}': net '{net.Name}' stage {s}: the coefficient blob {bin} does not match its sha256 check code; the file is damaged. Rebuild it or copy it again.", Name);
            }
    }

    public void Dispose()
    {
        if (_pointer != null)
        {
            _pointer = null;
            _view!.SafeMemoryMappedViewHandle.ReleasePointer();
        }
        _view?.Dispose();
        _map?.Dispose();
    }

    /// <summary>Exposes a range of the mapped view as <see cref="Memory{T}"/>.</summary>
    private sealed class MappedMemory(byte* pointer, int length) : MemoryManager<byte>
    {
        public override Span<byte> GetSpan() => new(pointer, length);
        public override MemoryHandle Pin(int elementIndex = 0) => new(pointer + elementIndex);
        public override void Unpin() { }
        protected override void Dispose(bool disposing) { }
    }
}
