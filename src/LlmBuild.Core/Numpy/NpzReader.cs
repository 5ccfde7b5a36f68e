using System.IO.Compression;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Win32.SafeHandles;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Numpy;

/// <summary>One array of an .npz: its key, header, and where its bytes are.</summary>
public sealed record NpzEntry(string Key, NpyHeader Header, uint Crc32, long NpyOffset, long NpyLength, long DataOffset, bool Stored)
{
    public string Descr => Header.Descr;
    public long[] Shape => Header.Shape;
    public long DataLength => Header.DataLength;
}

/// <summary>
/// Reads an .npz (a zip of .npy arrays, as numpy.savez writes). Entries are located from the central directory
/// (zip64 included) and read with positional reads, so nothing is loaded until asked for; STORED entries are read
/// in place, DEFLATE entries (savez_compressed) are inflated on open. Every offset is bounds-checked: a truncated
/// or corrupt file is a coded error, never a crash. Thread-safe for concurrent reads.
/// </summary>
public sealed class NpzReader : IDisposable
{
    private readonly SafeFileHandle _file;
    private readonly long _length;
    private readonly Dictionary<string, NpzEntry> _byKey = new(StringComparer.Ordinal);
    private readonly Dictionary<string, byte[]> _inflated = new(StringComparer.Ordinal);

    public NpzReader(string path)
    {
        Path = System.IO.Path.GetFullPath(path);
        try
        {
            _file = File.OpenHandle(Path, FileMode.Open, FileAccess.Read, FileShare.Read);
            _length = RandomAccess.GetLength(_file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot open '{Path}': {e.Message}", Path, e);
        }
        try
        {
            Entries = ReadDirectory();
        }
        catch
        {
            _file.Dispose();
            throw;
        }
    }

    public string Path { get; }

    /// <summary>Entries in the order they are stored.</summary>
    public IReadOnlyList<NpzEntry> Entries { get; }

    public IReadOnlyList<string> Keys => Entries.Select(e => e.Key).ToArray();

    public bool Contains(string key) => _byKey.ContainsKey(key);

    public NpzEntry GetEntry(string key) =>
        _byKey.TryGetValue(key, out var e) ? e
            : throw new LlmBuildException(ErrorCodes.NpzKeyNotFound,
                $"'{Path}' has no array '{key}' (it has {Entries.Count}: {string.Join(", ", Entries.Take(8).Select(x => x.Key))}{(Entries.Count > 8 ? ", …" : "")}). Rebuild so the weights match the model.", Path);

    /// <summary>An entry's data bytes (little-endian, C order).</summary>
    public byte[] ReadBytes(string key)
    {
        var e = GetEntry(key);
        byte[] result = new byte[checked((int)e.DataLength)];
        ReadBytes(key, 0, result);
        return result;
    }

    /// <summary>Reads <c>destination.Length</c> data bytes of an entry starting at data byte <paramref name="offset"/>.</summary>
    public void ReadBytes(string key, long offset, Span<byte> destination)
    {
        var e = GetEntry(key);
        if (offset < 0 || offset + destination.Length > e.DataLength)
            throw new LlmBuildException(ErrorCodes.BadNumpyFile,
                $"Read of {destination.Length} bytes at {offset} is outside array '{key}' of '{Path}' ({e.DataLength} bytes).", Path);
        if (e.Stored) ReadExactly(e.DataOffset + offset, destination);
        else _inflated[key].AsSpan(checked((int)(e.DataOffset - e.NpyOffset + offset)), destination.Length).CopyTo(destination);
    }

    /// <summary>
    /// An entry converted to f32: '&lt;f4', '&lt;f2', '&lt;f8', and '&lt;u2' read as bf16 bit patterns when
    /// <paramref name="uint16IsBFloat16"/> (LlmBuild's convention: numpy has no bf16).
    /// </summary>
    public float[] ReadFloat32(string key, bool uint16IsBFloat16 = true)
    {
        var e = GetEntry(key);
        float[] result = new float[checked((int)e.Header.ElementCount)];
        ReadFloat32(key, result, uint16IsBFloat16);
        return result;
    }

    public void ReadFloat32(string key, Span<float> destination, bool uint16IsBFloat16 = true)
    {
        var e = GetEntry(key);
        if (destination.Length != e.Header.ElementCount)
            throw new ArgumentException($"Array '{key}' has {e.Header.ElementCount} elements; the destination holds {destination.Length}.");
        switch (e.Descr)
        {
            case NpyFormat.Float32:
                ReadBytes(key, 0, MemoryMarshal.AsBytes(destination));
                break;
            case NpyFormat.Float16:
            case NpyFormat.UInt16 when uint16IsBFloat16:
            {
                ushort[] bits = new ushort[destination.Length];
                ReadBytes(key, 0, MemoryMarshal.AsBytes(bits.AsSpan()));
                if (e.Descr == NpyFormat.Float16) FloatFormats.HalfToFloat(bits, destination);
                else FloatFormats.BFloat16ToFloat(bits, destination);
                break;
            }
            case NpyFormat.Int32:
            {
                // Indices (an act-order input permutation): exact as f32 below 2^24.
                int[] ints = new int[destination.Length];
                ReadBytes(key, 0, MemoryMarshal.AsBytes(ints.AsSpan()));
                for (int i = 0; i < ints.Length; i++) destination[i] = ints[i];
                break;
            }
            case NpyFormat.Float64:
            {
                double[] d = new double[destination.Length];
                ReadBytes(key, 0, MemoryMarshal.AsBytes(d.AsSpan()));
                for (int i = 0; i < d.Length; i++) destination[i] = (float)d[i];
                break;
            }
            default:
                throw new LlmBuildException(ErrorCodes.BadNumpyFile,
                    $"Array '{key}' of '{Path}' has dtype '{e.Descr}', which cannot be read as f32 (expected <f4, <f2, <f8, <u2 bf16 bits or <i4).", Path);
        }
    }

    /// <summary>The whole .npy file of an entry (header and data), decoded.</summary>
    internal byte[] ReadNpyBytes(NpzEntry e)
    {
        if (!e.Stored) return _inflated[e.Key];
        byte[] result = new byte[checked((int)e.NpyLength)];
        ReadExactly(e.NpyOffset, result);
        return result;
    }

    /// <summary>Streams a stored entry's .npy bytes into <paramref name="destination"/> unchanged.</summary>
    internal void CopyNpyBytes(NpzEntry e, Stream destination)
    {
        byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            for (long done = 0; done < e.NpyLength;)
            {
                int n = (int)Math.Min(buffer.Length, e.NpyLength - done);
                ReadExactly(e.NpyOffset + done, buffer.AsSpan(0, n));
                destination.Write(buffer, 0, n);
                done += n;
            }
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void ReadExactly(long offset, Span<byte> destination)
    {
        if (offset < 0 || offset + destination.Length > _length) throw Bad($"a read of {destination.Length} bytes at {offset} runs past the end of the file ({_length} bytes); it is truncated");
        while (destination.Length > 0)
        {
            int n = RandomAccess.Read(_file, destination, offset);
            if (n <= 0) throw Bad("the file ended early; it is truncated");
            destination = destination[n..];
            offset += n;
        }
    }

    private List<NpzEntry> ReadDirectory()
    {
        var entries = new List<NpzEntry>();
        Span<byte> shortHeader = stackalloc byte[ShortHeader];
        foreach (ZipEntry zip in ZipDirectory.Read(_length, ReadExactly, Bad))
        {
            string name = zip.Name;
            int method = zip.Method;
            uint crc = zip.Crc32;
            long compressed = zip.CompressedSize, size = zip.Size, dataStart = zip.DataOffset;
            if (!name.EndsWith(".npy", StringComparison.Ordinal)) continue;
            string key = name[..^4];
            if (method is not (0 or 8)) throw Bad($"entry '{name}' uses zip compression method {method}; only stored and deflate are supported");

            NpyHeader header;
            int headerLength;
            bool stored = method == 0;
            if (stored)
            {
                if (compressed != size) throw Bad($"stored entry '{name}' has different compressed and uncompressed sizes");
                // The header's first bytes say how long it is (usually ~128 bytes): read those, and up to 64 KiB only
                // for a header longer than that (an open reads every entry's header; a weight file has dozens).
                Span<byte> start = shortHeader[..(int)Math.Min(size, ShortHeader)];
                ReadExactly(dataStart, start);
                if (!HeaderWithin(start))
                {
                    byte[] prefix = new byte[(int)Math.Min(size, 1 << 16)];
                    ReadExactly(dataStart, prefix);
                    start = prefix;
                }
                (header, headerLength) = NpyFormat.DecodeHeader(start, $"{Path}:{name}");
            }
            else
            {
                if (size > int.MaxValue) throw Bad($"deflated entry '{name}' is too large; store it uncompressed (numpy.savez)");
                byte[] packed = new byte[checked((int)compressed)];
                ReadExactly(dataStart, packed);
                byte[] npy = new byte[size];
                using (var inflater = new DeflateStream(new MemoryStream(packed), CompressionMode.Decompress))
                {
                    try
                    {
                        inflater.ReadExactly(npy);
                    }
                    catch (Exception e) when (e is InvalidDataException or EndOfStreamException)
                    {
                        throw Bad($"deflated entry '{name}' is corrupt ({e.Message})");
                    }
                }
                (header, headerLength) = NpyFormat.DecodeHeader(npy, $"{Path}:{name}");
                _inflated[key] = npy;
            }
            if (headerLength + header.DataLength != size)
                throw Bad($"entry '{name}' holds {size - headerLength} data bytes but its header says {header.Descr} {header.ShapeText} = {header.DataLength} bytes");
            var entry = new NpzEntry(key, header, crc, dataStart, size, dataStart + headerLength, stored);
            if (!_byKey.TryAdd(key, entry)) throw Bad($"entry '{name}' appears twice");
            entries.Add(entry);
        }
        return entries;
    }

    private const int ShortHeader = 256;

    /// <summary>Whether <paramref name="start"/> holds the whole npy header its prelude announces (else the longer read decides).</summary>
    private static bool HeaderWithin(ReadOnlySpan<byte> start)
    {
        if (start.Length < 12) return false;
        long dict = start[6] == 1 ? System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(start[8..])
            : System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(start[8..]);
        return (start[6] == 1 ? 10 : 12) + dict <= start.Length;
    }

    private LlmBuildException Bad(string what) =>
        new(ErrorCodes.BadNumpyFile, $"'{Path}' is not a readable .npz: {what}. Rebuild or re-export it.", Path);

    public void Dispose() => _file.Dispose();
}
