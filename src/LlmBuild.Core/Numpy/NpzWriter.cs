using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using LlmBuild.Core.IO;

namespace LlmBuild.Core.Numpy;

/// <summary>
/// Writes an .npz: a zip of <c>&lt;key&gt;.npy</c> entries, STORED (uncompressed) so entries can later be copied raw,
/// deterministic (fixed 1980-01-01 timestamps, entries in the order added, no extra attributes). Data is streamed:
/// an entry's bytes go straight to the output while its CRC is computed, then the CRC is patched into the local
/// header, so the target stream must be seekable. Zip64 records are used when an entry or offset exceeds 4 GiB.
/// Numpy's <c>numpy.load</c> reads the result.
/// </summary>
public sealed class NpzWriter : IDisposable
{
    private const uint LocalSignature = 0x04034b50, CentralSignature = 0x02014b50, EndSignature = 0x06054b50;
    private const uint Zip64EndSignature = 0x06064b50, Zip64LocatorSignature = 0x07064b50;
    private const ushort DosDate = (0 << 9) | (1 << 5) | 1; // 1980-01-01
    private const ushort DosTime = 0;

    private readonly Stream _stream;
    private readonly bool _leaveOpen;
    private readonly long _origin;
    private readonly List<CentralRecord> _entries = [];
    private readonly HashSet<string> _keys = new(StringComparer.Ordinal);
    private bool _finished, _broken;

    internal sealed record CentralRecord(byte[] Name, uint Crc, long Size, long Offset, bool Zip64Sizes);

    public NpzWriter(Stream stream, bool leaveOpen = false)
    {
        if (!stream.CanSeek || !stream.CanWrite) throw new ArgumentException("NpzWriter needs a writable, seekable stream.", nameof(stream));
        _stream = stream;
        _leaveOpen = leaveOpen;
        _origin = stream.Position;
    }

    /// <summary>
    /// Continues an npz this class wrote, after its first entries (<see cref="FindResumePoint"/>): the file is cut right
    /// after them and what is added next follows, so the result is byte for byte the file a writer that had added the
    /// same entries from the start would have written. The kept entries' bytes are neither read nor written again.
    /// </summary>
    public NpzWriter(Stream stream, NpzResumePoint resume)
    {
        if (!stream.CanSeek || !stream.CanWrite) throw new ArgumentException("NpzWriter needs a writable, seekable stream.", nameof(stream));
        if (stream.Length < resume.End) throw new ArgumentException($"The file holds {stream.Length} bytes, less than the {resume.End} bytes of the entries it continues.", nameof(stream));
        _stream = stream;
        _leaveOpen = true;
        _origin = 0;
        stream.SetLength(resume.End);
        stream.Position = resume.End;
        foreach (var r in resume.Records)
        {
            _entries.Add(r);
            _keys.Add(KeyOf(r.Name));
        }
    }

    /// <summary>
    /// Where the npz at <paramref name="path"/> can be continued after its first <paramref name="keep"/> entries, or null
    /// when it is not laid out exactly as this class lays out its files (each of those entries stored, its local header
    /// as written here, the entries back to back from the start of the file).
    /// </summary>
    public static NpzResumePoint? FindResumePoint(string path, int keep)
    {
        IReadOnlyList<NpzEntry> entries;
        using (var reader = new NpzReader(path)) entries = reader.Entries;
        if (keep < 0 || keep > entries.Count) return null;
        using var file = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        var records = new List<CentralRecord>();
        long position = 0;
        Span<byte> h = stackalloc byte[30];
        foreach (NpzEntry e in entries.Take(keep))
        {
            byte[] name = Encoding.UTF8.GetBytes(e.Key + ".npy");
            bool zip64 = e.NpyLength >= uint.MaxValue;
            long offset = e.NpyOffset - (30 + name.Length + (zip64 ? 20 : 0));
            if (!e.Stored || offset != position) return null;
            if (RandomAccess.Read(file, h, offset) != h.Length) return null;
            bool same = BinaryPrimitives.ReadUInt32LittleEndian(h) == LocalSignature
                && BinaryPrimitives.ReadUInt16LittleEndian(h[4..]) == (zip64 ? 45 : 20)
                && BinaryPrimitives.ReadUInt16LittleEndian(h[6..]) == Flags(name)
                && BinaryPrimitives.ReadUInt16LittleEndian(h[8..]) == 0
                && BinaryPrimitives.ReadUInt16LittleEndian(h[10..]) == DosTime
                && BinaryPrimitives.ReadUInt16LittleEndian(h[12..]) == DosDate
                && BinaryPrimitives.ReadUInt32LittleEndian(h[14..]) == e.Crc32
                && BinaryPrimitives.ReadUInt32LittleEndian(h[18..]) == (zip64 ? uint.MaxValue : (uint)e.NpyLength)
                && BinaryPrimitives.ReadUInt32LittleEndian(h[22..]) == (zip64 ? uint.MaxValue : (uint)e.NpyLength)
                && BinaryPrimitives.ReadUInt16LittleEndian(h[26..]) == name.Length
                && BinaryPrimitives.ReadUInt16LittleEndian(h[28..]) == (zip64 ? 20 : 0);
            if (!same) return null;
            byte[] stored = new byte[name.Length];
            if (RandomAccess.Read(file, stored, offset + 30) != stored.Length || !stored.AsSpan().SequenceEqual(name)) return null;
            records.Add(new CentralRecord(name, e.Crc32, e.NpyLength, offset, zip64));
            position = e.NpyOffset + e.NpyLength;
        }
        return new NpzResumePoint(records, position);
    }

    /// <summary>For tests: write zip64 records even for small entries.</summary>
    internal bool ForceZip64 { get; init; }

    /// <summary>The keys added so far, in order.</summary>
    public IReadOnlyList<string> Keys => _entries.Select(e => KeyOf(e.Name)).ToArray();

    private static string KeyOf(byte[] name) => Encoding.UTF8.GetString(name)[..^4];

    /// <summary>Adds an array from its little-endian bytes.</summary>
    public void Add(string key, string npyDescr, long[] shape, ReadOnlySpan<byte> littleEndianData)
    {
        byte[] header = NpyFormat.EncodeHeader(npyDescr, shape);
        long expected = new NpyHeader(npyDescr, shape).DataLength;
        if (littleEndianData.Length != expected)
            throw new ArgumentException($"npz entry '{key}': {npyDescr} {string.Join('x', shape)} needs {expected} bytes, got {littleEndianData.Length}.");
        uint crc = Crc32.Append(Crc32.Compute(header), littleEndianData);
        long offset = BeginEntry(key, header.Length + expected, crc);
        _stream.Write(header);
        _stream.Write(littleEndianData);
        _ = offset;
    }

    public void AddFloat32(string key, ReadOnlySpan<float> data, long[] shape) => Add(key, NpyFormat.Float32, shape, MemoryMarshal.AsBytes(data));
    /// <summary>bf16 bit patterns, stored as '&lt;u2'.</summary>
    public void AddBFloat16(string key, ReadOnlySpan<ushort> bits, long[] shape) => Add(key, NpyFormat.UInt16, shape, MemoryMarshal.AsBytes(bits));
    /// <summary>f16 bit patterns, stored as '&lt;f2'.</summary>
    public void AddHalf(string key, ReadOnlySpan<ushort> bits, long[] shape) => Add(key, NpyFormat.Float16, shape, MemoryMarshal.AsBytes(bits));
    public void AddUInt8(string key, ReadOnlySpan<byte> data, long[] shape) => Add(key, NpyFormat.UInt8, shape, data);
    public void AddInt8(string key, ReadOnlySpan<sbyte> data, long[] shape) => Add(key, NpyFormat.Int8, shape, MemoryMarshal.AsBytes(data));
    public void AddInt32(string key, ReadOnlySpan<int> data, long[] shape) => Add(key, NpyFormat.Int32, shape, MemoryMarshal.AsBytes(data));

    /// <summary>
    /// Adds an array whose data <paramref name="writeData"/> streams (exactly shape × itemsize bytes, little-endian)
    /// into the stream it is given. Memory stays bounded by what the callback holds.
    /// </summary>
    public void AddStreamed(string key, string npyDescr, long[] shape, Action<Stream> writeData)
    {
        byte[] header = NpyFormat.EncodeHeader(npyDescr, shape);
        long expected = new NpyHeader(npyDescr, shape).DataLength;
        long localOffset = BeginEntry(key, header.Length + expected, 0);
        var sink = new CrcStream(_stream);
        sink.Write(header);
        try
        {
            writeData(sink);
        }
        catch
        {
            _broken = true;
            throw;
        }
        if (sink.Count != header.Length + expected)
        {
            _broken = true;
            throw new InvalidOperationException($"npz entry '{key}': {npyDescr} {string.Join('x', shape)} needs {expected} data bytes, {sink.Count - header.Length} were written.");
        }
        PatchCrc(localOffset, sink.Crc);
    }

    /// <summary>Copies an entry of another npz without decoding it (raw bytes when it is stored), optionally renaming it.</summary>
    public void CopyEntry(NpzReader reader, string key, string? newKey = null)
    {
        NpzEntry entry = reader.GetEntry(key);
        string name = newKey ?? key;
        if (entry.Stored)
        {
            BeginEntry(name, entry.NpyLength, entry.Crc32);
            reader.CopyNpyBytes(entry, _stream);
        }
        else
        {
            byte[] npy = reader.ReadNpyBytes(entry);
            BeginEntry(name, npy.Length, Crc32.Compute(npy));
            _stream.Write(npy);
        }
    }

    /// <summary>Writes the local header of a new entry; returns its offset.</summary>
    private long BeginEntry(string key, long size, uint crc)
    {
        if (_finished) throw new InvalidOperationException("The npz is already finished.");
        if (_broken) throw new InvalidOperationException("A previous entry failed; this npz cannot be completed.");
        if (!_keys.Add(key)) throw new ArgumentException($"npz key '{key}' was already added.", nameof(key));
        byte[] name = Encoding.UTF8.GetBytes(key + ".npy");
        bool zip64 = ForceZip64 || size >= uint.MaxValue;
        long offset = _stream.Position - _origin;
        Span<byte> h = stackalloc byte[30 + 20];
        BinaryPrimitives.WriteUInt32LittleEndian(h, LocalSignature);
        BinaryPrimitives.WriteUInt16LittleEndian(h[4..], (ushort)(zip64 ? 45 : 20));
        BinaryPrimitives.WriteUInt16LittleEndian(h[6..], Flags(name));
        BinaryPrimitives.WriteUInt16LittleEndian(h[8..], 0); // stored
        BinaryPrimitives.WriteUInt16LittleEndian(h[10..], DosTime);
        BinaryPrimitives.WriteUInt16LittleEndian(h[12..], DosDate);
        BinaryPrimitives.WriteUInt32LittleEndian(h[14..], crc);
        BinaryPrimitives.WriteUInt32LittleEndian(h[18..], zip64 ? uint.MaxValue : (uint)size);
        BinaryPrimitives.WriteUInt32LittleEndian(h[22..], zip64 ? uint.MaxValue : (uint)size);
        BinaryPrimitives.WriteUInt16LittleEndian(h[26..], (ushort)name.Length);
        BinaryPrimitives.WriteUInt16LittleEndian(h[28..], (ushort)(zip64 ? 20 : 0));
        _stream.Write(h[..30]);
        _stream.Write(name);
        if (zip64)
        {
            BinaryPrimitives.WriteUInt16LittleEndian(h[30..], 1);
            BinaryPrimitives.WriteUInt16LittleEndian(h[32..], 16);
            BinaryPrimitives.WriteInt64LittleEndian(h[34..], size);
            BinaryPrimitives.WriteInt64LittleEndian(h[42..], size);
            _stream.Write(h[30..50]);
        }
        _entries.Add(new CentralRecord(name, crc, size, offset, zip64));
        return offset;
    }

    private void PatchCrc(long localOffset, uint crc)
    {
        long end = _stream.Position;
        Span<byte> b = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(b, crc);
        _stream.Position = _origin + localOffset + 14;
        _stream.Write(b);
        _stream.Position = end;
        _entries[^1] = _entries[^1] with { Crc = crc };
    }

    private static ushort Flags(byte[] name) => (ushort)(name.Any(b => b >= 0x80) ? 1 << 11 : 0); // UTF-8 names

    /// <summary>Writes the central directory. Called by <see cref="Dispose"/> when not called before.</summary>
    public void Finish()
    {
        if (_finished) return;
        if (_broken) throw new InvalidOperationException("A previous entry failed; this npz cannot be completed.");
        _finished = true;
        long cdStart = _stream.Position - _origin;
        var buffer = new ArrayBufferWriter<byte>();
        foreach (var e in _entries)
        {
            bool offset64 = ForceZip64 || e.Offset >= uint.MaxValue;
            int extra = (e.Zip64Sizes ? 16 : 0) + (offset64 ? 8 : 0);
            var h = buffer.GetSpan(46 + e.Name.Length + 4 + extra)[..(46 + e.Name.Length + (extra > 0 ? 4 + extra : 0))];
            h.Clear();
            BinaryPrimitives.WriteUInt32LittleEndian(h, CentralSignature);
            ushort version = (ushort)(extra > 0 ? 45 : 20);
            BinaryPrimitives.WriteUInt16LittleEndian(h[4..], version);
            BinaryPrimitives.WriteUInt16LittleEndian(h[6..], version);
            BinaryPrimitives.WriteUInt16LittleEndian(h[8..], Flags(e.Name));
            BinaryPrimitives.WriteUInt16LittleEndian(h[12..], DosTime);
            BinaryPrimitives.WriteUInt16LittleEndian(h[14..], DosDate);
            BinaryPrimitives.WriteUInt32LittleEndian(h[16..], e.Crc);
            BinaryPrimitives.WriteUInt32LittleEndian(h[20..], e.Zip64Sizes ? uint.MaxValue : (uint)e.Size);
            BinaryPrimitives.WriteUInt32LittleEndian(h[24..], e.Zip64Sizes ? uint.MaxValue : (uint)e.Size);
            BinaryPrimitives.WriteUInt16LittleEndian(h[28..], (ushort)e.Name.Length);
            BinaryPrimitives.WriteUInt16LittleEndian(h[30..], (ushort)(extra > 0 ? 4 + extra : 0));
            BinaryPrimitives.WriteUInt32LittleEndian(h[42..], offset64 ? uint.MaxValue : (uint)e.Offset);
            e.Name.CopyTo(h[46..]);
            if (extra > 0)
            {
                var x = h[(46 + e.Name.Length)..];
                BinaryPrimitives.WriteUInt16LittleEndian(x, 1);
                BinaryPrimitives.WriteUInt16LittleEndian(x[2..], (ushort)extra);
                int at = 4;
                if (e.Zip64Sizes)
                {
                    BinaryPrimitives.WriteInt64LittleEndian(x[at..], e.Size);
                    BinaryPrimitives.WriteInt64LittleEndian(x[(at + 8)..], e.Size);
                    at += 16;
                }
                if (offset64) BinaryPrimitives.WriteInt64LittleEndian(x[at..], e.Offset);
            }
            buffer.Advance(h.Length);
        }
        _stream.Write(buffer.WrittenSpan);
        long cdSize = buffer.WrittenCount;
        bool zip64End = ForceZip64 || _entries.Count >= ushort.MaxValue || cdStart >= uint.MaxValue || cdSize >= uint.MaxValue;
        Span<byte> end = stackalloc byte[56 + 20 + 22];
        end.Clear();
        int n = 0;
        if (zip64End)
        {
            long zip64EndOffset = _stream.Position - _origin;
            BinaryPrimitives.WriteUInt32LittleEndian(end, Zip64EndSignature);
            BinaryPrimitives.WriteInt64LittleEndian(end[4..], 44);
            BinaryPrimitives.WriteUInt16LittleEndian(end[12..], 45);
            BinaryPrimitives.WriteUInt16LittleEndian(end[14..], 45);
            BinaryPrimitives.WriteInt64LittleEndian(end[24..], _entries.Count);
            BinaryPrimitives.WriteInt64LittleEndian(end[32..], _entries.Count);
            BinaryPrimitives.WriteInt64LittleEndian(end[40..], cdSize);
            BinaryPrimitives.WriteInt64LittleEndian(end[48..], cdStart);
            BinaryPrimitives.WriteUInt32LittleEndian(end[56..], Zip64LocatorSignature);
            BinaryPrimitives.WriteInt64LittleEndian(end[64..], zip64EndOffset);
            BinaryPrimitives.WriteUInt32LittleEndian(end[72..], 1);
            n = 76;
        }
        var eocd = end[n..];
        BinaryPrimitives.WriteUInt32LittleEndian(eocd, EndSignature);
        ushort count = (ushort)Math.Min(_entries.Count, ushort.MaxValue);
        BinaryPrimitives.WriteUInt16LittleEndian(eocd[8..], zip64End ? ushort.MaxValue : count);
        BinaryPrimitives.WriteUInt16LittleEndian(eocd[10..], zip64End ? ushort.MaxValue : count);
        BinaryPrimitives.WriteUInt32LittleEndian(eocd[12..], zip64End ? uint.MaxValue : (uint)cdSize);
        BinaryPrimitives.WriteUInt32LittleEndian(eocd[16..], zip64End ? uint.MaxValue : (uint)cdStart);
        _stream.Write(end[..(n + 22)]);
        _stream.Flush();
    }

    public void Dispose()
    {
        try
        {
            if (!_broken) Finish();
        }
        finally
        {
            if (!_leaveOpen) _stream.Dispose();
        }
    }

    /// <summary>Forwards writes to the zip stream, counting bytes and computing their CRC.</summary>
    private sealed class CrcStream(Stream inner) : Stream
    {
        public uint Crc { get; private set; }
        public long Count { get; private set; }

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            Crc = IO.Crc32.Append(Crc, buffer);
            Count += buffer.Length;
            inner.Write(buffer);
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void WriteByte(byte value) => Write([value]);
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => Count;
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override void Flush() { }
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

/// <summary>The first entries of an npz and where they end: where <see cref="NpzWriter"/> continues the file.</summary>
public sealed class NpzResumePoint
{
    internal NpzResumePoint(IReadOnlyList<NpzWriter.CentralRecord> records, long end)
    {
        Records = records;
        End = end;
    }

    internal IReadOnlyList<NpzWriter.CentralRecord> Records { get; }

    /// <summary>The byte offset right after the kept entries.</summary>
    public long End { get; }

    /// <summary>How many entries are kept.</summary>
    public int Count => Records.Count;
}
