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
    private readonly List<(ReadOnlyMemory<byte> Data, ulong Start, byte[] Sha256)> _segments = new();
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

    /// <summary>Adds a payload (or finds an identical one) and returns where it lives in the blob.</summary>
    public BinaryRef Add(ReadOnlyMemory<byte> data) => Add(data, out _);

    private BinaryRef Add(ReadOnlyMemory<byte> data, out byte[] sha256)
    {
        sha256 = SHA256.HashData(data.Span);
        if (data.Length == 0) return new BinaryRef(0, 0);
        var key = Key(sha256, (ulong)data.Length);
        if (_byContent.TryGetValue(key, out int index) && _segments[index].Data.Span.SequenceEqual(data.Span))
        {
            DedupedCount++;
            DedupedBytes += (ulong)data.Length;
            return new BinaryRef(_segments[index].Start, (ulong)data.Length);
        }
        ulong start = AlignUp(Length);
        _segments.Add((data, start, sha256));
        _byContent.TryAdd(key, _segments.Count - 1);
        Length = start + (ulong)data.Length;
        UniqueBytes += (ulong)data.Length;
        return new BinaryRef(start, (ulong)data.Length);
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
            if (s.Start == binary.Start && (ulong)s.Data.Length == binary.Size) return s.Sha256;
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

    /// <summary>Writes the blob: each payload at its offset, zero padding between.</summary>
    internal void WriteTo(Stream output)
    {
        ulong pos = 0;
        Span<byte> zeros = stackalloc byte[64];
        zeros.Clear();
        foreach (var s in _segments)
        {
            while (pos < s.Start)
            {
                int n = (int)Math.Min(s.Start - pos, (ulong)zeros.Length);
                output.Write(zeros[..n]);
                pos += (ulong)n;
            }
            output.Write(s.Data.Span);
            pos += (ulong)s.Data.Length;
        }
    }

    private ulong AlignUp(ulong v) => (v + (ulong)Alignment - 1) & ~((ulong)Alignment - 1);

    private static (ulong, ulong, ulong, ulong, ulong) Key(byte[] sha, ulong size) =>
        (BinaryPrimitives.ReadUInt64LittleEndian(sha), BinaryPrimitives.ReadUInt64LittleEndian(sha.AsSpan(8)),
         BinaryPrimitives.ReadUInt64LittleEndian(sha.AsSpan(16)), BinaryPrimitives.ReadUInt64LittleEndian(sha.AsSpan(24)), size);
}
