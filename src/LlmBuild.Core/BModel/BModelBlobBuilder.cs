using System.Buffers.Binary;
using System.Security.Cryptography;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.BModel;

/// <summary>
/// Lays out the binary blob that follows a bmodel's flatbuffer: each payload (coefficients, command streams, kernel
/// modules) is placed at the next aligned offset, and a payload byte-identical to one added before is stored once and
/// gets the same <see cref="BinaryRef"/> (how block_i and block_cache_i share their weights). Payloads are not
/// copied: the memory must stay valid until the bmodel has been written.
/// </summary>
public sealed class BModelBlobBuilder
{
    private readonly List<(ReadOnlyMemory<byte> Data, ulong Start, byte[] Sha256, ExternalPayload? External)> _segments = new();
    private readonly Dictionary<(ulong, ulong, ulong, ulong, ulong), int> _byContent = new();

    /// <param name="alignment">Byte alignment of each payload's start inside the blob (a power of two).</param>
    public BModelBlobBuilder(int alignment = 64)
    {
        if (alignment <= 0 || (alignment & (alignment - 1)) != 0) throw new ArgumentOutOfRangeException(nameof(alignment), "The alignment must be a power of two.");
        Alignment = alignment;
    }

    public int Alignment { get; }

    /// <summary>Blob length in bytes, including alignment padding between payloads (none after the last).</summary>
    public ulong Length { get; private set; }

    /// <summary>Number of distinct payloads stored.</summary>
    public int UniqueCount => _segments.Count;

    /// <summary>Bytes of the distinct payloads, without padding.</summary>
    public ulong UniqueBytes { get; private set; }

    /// <summary>Number of payloads that were already present and were not stored again.</summary>
    public int DedupedCount { get; private set; }

    /// <summary>Bytes not stored thanks to deduplication.</summary>
    public ulong DedupedBytes { get; private set; }

    /// <summary>Zero bytes before the first payload, set by <see cref="Shift"/> (0 until then).</summary>
    public ulong Leading { get; private set; }

    /// <summary>
    /// Where the leading region of payloads ends (the combined bmodel's coefficients, see <see cref="EndLeadingRegion"/>):
    /// payloads added before the call lie in [<see cref="Leading"/>, <see cref="LeadingRegionEnd"/>), later ones after it.
    /// Null until the call.
    /// </summary>
    public ulong? LeadingRegionEnd { get; private set; }

    /// <summary>Closes the leading region: every payload added from now on is placed after it.</summary>
    public void EndLeadingRegion()
    {
        if (LeadingRegionEnd is not null) throw new InvalidOperationException("The leading region was already closed.");
        LeadingRegionEnd = Length;
    }

    /// <summary>
    /// Moves every payload <paramref name="lead"/> bytes later, zeros before the first (the caller moves the references
    /// it holds by as much, see <see cref="Shifted"/>). Once only, before the blob is written.
    /// </summary>
    public void Shift(ulong lead)
    {
        if (Leading != 0) throw new InvalidOperationException("The blob was already shifted.");
        if (lead == 0) return;
        for (int i = 0; i < _segments.Count; i++) _segments[i] = _segments[i] with { Start = _segments[i].Start + lead };
        Length += lead;
        LeadingRegionEnd += lead;
        Leading = lead;
    }

    /// <summary>A reference moved as <see cref="Shift"/> moved the payloads (an empty reference stays where it is).</summary>
    public static BinaryRef Shifted(BinaryRef binary, ulong lead) => binary.Size == 0 ? binary : new BinaryRef(binary.Start + lead, binary.Size);

    /// <summary>Adds a payload (or finds an identical one) and returns where it lives in the blob.</summary>
    public BinaryRef Add(ReadOnlyMemory<byte> data) => Add(data, out _);

    private BinaryRef Add(ReadOnlyMemory<byte> data, out byte[] sha256)
    {
        sha256 = SHA256.HashData(data.Span);
        if (data.Length == 0) return new BinaryRef(0, 0);
        var key = Key(sha256, (ulong)data.Length);
        if (_byContent.TryGetValue(key, out int index)
            && (_segments[index].External is not null || _segments[index].Data.Span.SequenceEqual(data.Span)))
        {
            DedupedCount++;
            DedupedBytes += (ulong)data.Length;
            return new BinaryRef(_segments[index].Start, (ulong)data.Length);
        }
        return Append(data, (ulong)data.Length, sha256, null);
    }

    private BinaryRef Append(ReadOnlyMemory<byte> data, ulong length, byte[] sha256, ExternalPayload? external)
    {
        ulong start = AlignUp(Length);
        _segments.Add((data, start, sha256, external));
        _byContent.TryAdd(Key(sha256, length), _segments.Count - 1);
        Length = start + length;
        UniqueBytes += length;
        return new BinaryRef(start, length);
    }

    /// <summary>
    /// Adds a payload that is not in memory: <paramref name="payload"/> writes it when the blob is written (streamed
    /// from where it was stored once). It is deduplicated by its sha256 and length like any other payload.
    /// </summary>
    public BinaryRef AddExternal(ExternalPayload payload)
    {
        if (payload.Length == 0) return new BinaryRef(0, 0);
        if (_byContent.TryGetValue(Key(payload.Sha256, payload.Length), out int index))
        {
            DedupedCount++;
            DedupedBytes += payload.Length;
            return new BinaryRef(_segments[index].Start, payload.Length);
        }
        return Append(ReadOnlyMemory<byte>.Empty, payload.Length, payload.Sha256, payload);
    }

    /// <summary>Adds a stage's coefficient memory: the payload, its sha256 check code, device address and op locations.</summary>
    public CoeffMem AddCoeff(ReadOnlyMemory<byte> data, ulong address = 0, IReadOnlyList<CoeffLocation>? locations = null)
    {
        var binary = Add(data, out byte[] sha256);
        return new CoeffMem { Address = address, CheckCode = sha256, BinaryCoeff = binary, Locations = locations ?? [] };
    }

    /// <summary>True when <paramref name="binary"/> lies inside the blob laid out so far.</summary>
    public bool Contains(BinaryRef binary) => binary.Size == 0 || (binary.Start <= Length && binary.Size <= Length - binary.Start);

    /// <summary>sha256 of the bytes a reference covers (it may span payloads and padding).</summary>
    public byte[] Sha256(BinaryRef binary)
    {
        if (!Contains(binary)) throw new LlmBuildException(ErrorCodes.BModelInvalid, $"Binary {binary} lies outside the {Length}-byte blob; add payloads through BModelBlobBuilder.Add.");
        foreach (var s in _segments)
            if (s.Start == binary.Start && SizeOf(s) == binary.Size) return s.Sha256;
        if (_segments.Any(s => s.External is not null && s.Start < binary.Start + binary.Size && binary.Start < s.Start + SizeOf(s)))
            throw new LlmBuildException(ErrorCodes.BModelInvalid, $"Binary {binary} covers part of a streamed payload; only whole payloads can be hashed before writing.");
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        ForEachPiece(binary, piece => hash.AppendData(piece));
        return hash.GetHashAndReset();
    }

    private delegate void PieceAction(ReadOnlySpan<byte> piece);

    private void ForEachPiece(BinaryRef binary, PieceAction action)
    {
        ulong pos = binary.Start, end = binary.Start + binary.Size;
        Span<byte> zeros = stackalloc byte[256];
        zeros.Clear();
        foreach (var s in _segments)
        {
            ulong sEnd = s.Start + (ulong)s.Data.Length;
            if (sEnd <= pos) continue;
            if (pos >= end) break;
            while (pos < s.Start && pos < end)
            {
                int n = (int)Math.Min(Math.Min(s.Start, end) - pos, (ulong)zeros.Length);
                action(zeros[..n]);
                pos += (ulong)n;
            }
            if (pos >= end) break;
            ulong take = Math.Min(sEnd, end) - pos;
            action(s.Data.Span.Slice((int)(pos - s.Start), (int)take));
            pos += take;
        }
    }

    /// <summary>
    /// Writes the blob from offset <paramref name="from"/> on (the whole blob by default): each payload at its offset,
    /// zero padding between. <paramref name="from"/> may not cut a payload; those before it are not written.
    /// </summary>
    internal void WriteTo(Stream output, ulong from = 0)
    {
        ulong pos = from;
        Span<byte> zeros = stackalloc byte[64];
        zeros.Clear();
        foreach (var s in _segments)
        {
            if (s.Start < from)
            {
                if (s.Start + SizeOf(s) > from) throw new ArgumentOutOfRangeException(nameof(from), $"Offset {from} cuts the payload at {s.Start}.");
                continue;
            }
            while (pos < s.Start)
            {
                int n = (int)Math.Min(s.Start - pos, (ulong)zeros.Length);
                output.Write(zeros[..n]);
                pos += (ulong)n;
            }
            if (s.External is { } external)
            {
                var counted = new CountingStream(output);
                external.Write(counted);
                if ((ulong)counted.Count != external.Length)
                    throw new LlmBuildException(ErrorCodes.WriteFailed, $"A streamed payload wrote {counted.Count} bytes instead of {external.Length}.");
                pos += external.Length;
                continue;
            }
            output.Write(s.Data.Span);
            pos += (ulong)s.Data.Length;
        }
        while (pos < Length) // a blob that is all padding (shifted, no payload after `from`)
        {
            int n = (int)Math.Min(Length - pos, (ulong)zeros.Length);
            output.Write(zeros[..n]);
            pos += (ulong)n;
        }
    }

    private static ulong SizeOf((ReadOnlyMemory<byte> Data, ulong Start, byte[] Sha256, ExternalPayload? External) s) =>
        s.External?.Length ?? (ulong)s.Data.Length;

    private ulong AlignUp(ulong v) => (v + (ulong)Alignment - 1) & ~((ulong)Alignment - 1);

    private static (ulong, ulong, ulong, ulong, ulong) Key(byte[] sha, ulong size) =>
        (BinaryPrimitives.ReadUInt64LittleEndian(sha), BinaryPrimitives.ReadUInt64LittleEndian(sha.AsSpan(8)),
         BinaryPrimitives.ReadUInt64LittleEndian(sha.AsSpan(16)), BinaryPrimitives.ReadUInt64LittleEndian(sha.AsSpan(24)), size);
}

/// <summary>Passes writes through to another stream, counting the bytes.</summary>
internal sealed class CountingStream(Stream inner) : Stream
{
    public long Count { get; private set; }
    public override void Write(ReadOnlySpan<byte> buffer) { inner.Write(buffer); Count += buffer.Length; }
    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
    public override void WriteByte(byte value) => Write([value]);
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}

/// <summary>
/// A blob payload written by a callback when the bmodel is written: <see cref="Length"/> bytes whose sha256 is
/// <see cref="Sha256"/>. The callback writes exactly those bytes or throws (it checks what it streams).
/// </summary>
public sealed record ExternalPayload(ulong Length, byte[] Sha256, Action<Stream> Write);
