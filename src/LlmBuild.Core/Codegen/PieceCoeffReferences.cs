using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text.Json;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numpy;

namespace LlmBuild.Core.Codegen;

/// <summary>One coefficient memory a piece bmodel references instead of holding: its size, sha256 and byte sources.</summary>
public sealed record CoeffReference(string Where, long Size, string Sha256, IReadOnlyList<CoeffSegment> Segments);

/// <summary>
/// The coefficient references of a built-in piece bmodel (DESIGN §14). The compile stage writes a piece's bmodel
/// without its coefficient bytes — each stage's coefficient memory keeps its sha256 check code and an empty binary —
/// and appends this table as a trailer (JSON, its length as u64, the magic "LLMBCREF"): the one weight file the
/// piece's module names (relative to the bmodel's folder), the CRC-32 and data length of every entry it reads, and
/// for each coefficient memory the segments of those entries it is made of (alignment gaps are zeros). One file,
/// renamed into place like every artifact, so the bmodel and its references never disagree. The combine stage checks
/// the entries' CRC-32s against the weight file's directory, then streams the bytes into the final bmodel and checks
/// them on the way: a weight file that changed after the piece was compiled is a coded error
/// (<see cref="ErrorCodes.StaleCoefficientReference"/>), never a wrong model. A sha256 this process computed from the
/// same file (same length, write time, entries' CRC-32s and lengths: <see cref="Hash"/>'s cache, so a build whose compile
/// and combine run in one MSBuild node) is checked through the CRC-32 of each whole entry the blob is made of: it sees
/// any change of those bytes at a tenth of a second sha256's cost. Any other sha256 — a claim taken from a previous
/// piece bmodel, one from another process — or a blob made of parts of entries is checked by hashing the streamed bytes.
/// </summary>
public sealed record PieceCoeffReferences(string WeightFile, IReadOnlyList<WeightFileEntry> Entries, IReadOnlyList<CoeffReference> Coefficients)
{
    private static ReadOnlySpan<byte> Magic => "LLMBCREF"u8;
    private const int TrailerTail = 16;

    // Compile-time metadata (the text is the reflection serializer's): no serializer is built at run time in a build.
    private static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = false,
        TypeInfoResolver = System.Text.Json.Serialization.Metadata.JsonTypeInfoResolver.Combine(
            PieceCoeffReferencesJsonContext.Default, new System.Text.Json.Serialization.Metadata.DefaultJsonTypeInfoResolver()),
    };

    /// <summary>The trailer bytes to append after the bmodel.</summary>
    public byte[] ToTrailer()
    {
        byte[] json = JsonSerializer.SerializeToUtf8Bytes(this, Json);
        var trailer = new byte[json.Length + TrailerTail];
        json.CopyTo(trailer, 0);
        BinaryPrimitives.WriteUInt64LittleEndian(trailer.AsSpan(json.Length), (ulong)json.Length);
        Magic.CopyTo(trailer.AsSpan(json.Length + 8));
        return trailer;
    }

    /// <summary>The references appended to <paramref name="bmodelPath"/>, or null for a bmodel that holds its coefficients.</summary>
    public static PieceCoeffReferences? TryRead(string bmodelPath)
    {
        using var file = new FileStream(bmodelPath, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1);
        if (file.Length < TrailerTail) return null;
        Span<byte> tail = stackalloc byte[TrailerTail];
        file.Position = file.Length - TrailerTail;
        file.ReadExactly(tail);
        if (!tail[8..].SequenceEqual(Magic)) return null;
        ulong length = BinaryPrimitives.ReadUInt64LittleEndian(tail);
        if (length > (ulong)(file.Length - TrailerTail) || length > 1 << 30)
            throw new LlmBuildException(ErrorCodes.BadCoefficientReference, $"'{bmodelPath}': its coefficient reference trailer claims {length} bytes, more than the file holds. Delete it and rebuild.", bmodelPath);
        var json = new byte[length];
        file.Position = file.Length - TrailerTail - (long)length;
        file.ReadExactly(json);
        try
        {
            return JsonSerializer.Deserialize<PieceCoeffReferences>(json, Json)
                ?? throw new JsonException("null");
        }
        catch (JsonException e)
        {
            throw new LlmBuildException(ErrorCodes.BadCoefficientReference, $"'{bmodelPath}': its coefficient reference trailer is not valid ({e.Message}). Delete it and rebuild.", bmodelPath, e);
        }
    }

    /// <summary>The weight file's full path, from the folder of the bmodel that references it.</summary>
    public string WeightFilePath(string bmodelPath) => Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(bmodelPath))!, WeightFile));

    /// <summary>
    /// Checks that the weight file still holds every referenced entry with the CRC-32 and length the piece was compiled
    /// from (the zip directory only: no data is read), and returns the entries' data offsets in the file.
    /// </summary>
    public IReadOnlyDictionary<string, long> Validate(string bmodelPath) => Locate(bmodelPath).Data;

    /// <summary><see cref="Validate"/>, also giving where each entry's .npy (its header, which the entry's CRC-32 covers too) starts.</summary>
    private (Dictionary<string, long> Data, Dictionary<string, long> Npy) Locate(string bmodelPath)
    {
        string weights = WeightFilePath(bmodelPath);
        string Stale(string why) =>
            $"Piece bmodel '{bmodelPath}' references coefficients in '{weights}', but {why}: the weight file changed after the piece was compiled.";
        if (!File.Exists(weights)) throw new LlmBuildException(ErrorCodes.StaleCoefficientReference, Stale("the file is missing"), bmodelPath);
        using var npz = new NpzReader(weights);
        var offsets = new Dictionary<string, long>(StringComparer.Ordinal);
        var npyOffsets = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (WeightFileEntry e in Entries)
        {
            if (!npz.Contains(e.Key)) throw new LlmBuildException(ErrorCodes.StaleCoefficientReference, Stale($"it has no entry '{e.Key}'"), bmodelPath);
            NpzEntry now = npz.GetEntry(e.Key);
            if (!now.Stored || now.Crc32 != e.Crc32 || now.DataLength != e.DataLength)
                throw new LlmBuildException(ErrorCodes.StaleCoefficientReference,
                    Stale($"entry '{e.Key}' now has CRC-32 {now.Crc32:x8} and {now.DataLength} data bytes, not {e.Crc32:x8} and {e.DataLength}"), bmodelPath);
            offsets[e.Key] = now.DataOffset;
            npyOffsets[e.Key] = now.NpyOffset;
        }
        foreach (var c in Coefficients)
            foreach (var s in c.Segments)
            {
                WeightFileEntry entry = Entries.FirstOrDefault(e => e.Key == s.Key)
                    ?? throw new LlmBuildException(ErrorCodes.BadCoefficientReference, $"'{bmodelPath}': {c.Where} reads entry '{s.Key}', which its reference table does not list. Delete it and rebuild.", bmodelPath);
                bool fits = s.Offset >= 0 && s.Run >= 0 && s.Count >= 1 && s.Stride >= s.Run && s.At >= 0 && s.At + s.Length <= c.Size
                    && s.Offset + (s.Count - 1) * s.Stride + s.Run <= entry.DataLength;
                if (!fits)
                    throw new LlmBuildException(ErrorCodes.BadCoefficientReference, $"'{bmodelPath}': {c.Where} has a segment outside entry '{s.Key}' or outside its {c.Size} bytes. Delete it and rebuild.", bmodelPath);
            }
        return (offsets, npyOffsets);
    }

    /// <summary>
    /// The payloads the combine stage adds instead of the piece's empty coefficient binaries, keyed by
    /// <see cref="BModelBinaries.CoeffWhere"/>. Each streams its bytes from the weight file when the bmodel is written
    /// and checks their sha256.
    /// </summary>
    public IReadOnlyDictionary<string, ExternalPayload> Payloads(string bmodelPath)
    {
        var (offsets, npyOffsets) = Locate(bmodelPath);
        string weights = WeightFilePath(bmodelPath);
        var payloads = new Dictionary<string, ExternalPayload>(StringComparer.Ordinal);
        foreach (CoeffReference c in Coefficients)
        {
            byte[] sha = Convert.FromHexString(c.Sha256);
            var whole = ComputedHere(weights, c, sha) ? WholeEntries(c, Entries) : null;
            payloads[c.Where] = new ExternalPayload((ulong)c.Size, sha, output => Stream(c, weights, offsets, sha, output, bmodelPath, whole: whole, npyOffsets: npyOffsets));
        }
        return payloads;
    }

    /// <summary>
    /// The sha256 of a coefficient blob made of <paramref name="segments"/> of <paramref name="npzPath"/>'s entries, streamed.
    /// Pieces that share an owner (block_i and block_cache_i, embedding and embedding_cache and a tied lm_head) lay out
    /// the same blob: it is hashed once per process, keyed by the file (path, length, write time), the entries' CRC-32s
    /// and lengths, and the segments — everything the bytes depend on.
    /// </summary>
    public static byte[] Hash(string npzPath, IReadOnlyList<WeightFileEntry> entries, IReadOnlyList<CoeffSegment> segments, long size)
    {
        var file = new FileInfo(Path.GetFullPath(npzPath));
        if (!file.Exists) return HashUncached(npzPath, entries, segments, size);
        string blob = BlobKey(file.FullName, size, entries, segments);
        if (_claims is not null && _claims.TryGetValue(blob, out byte[]? claimed)) return (byte[])claimed.Clone();
        string key = CacheKey(file, blob);
        if (HashCache.Count > 4096) HashCache.Clear();
        var lazy = HashCache.GetOrAdd(key, _ => new Lazy<byte[]>(() => HashUncached(npzPath, entries, segments, size)));
        try
        {
            return (byte[])lazy.Value.Clone();
        }
        catch
        {
            HashCache.TryRemove(key, out _);
            throw;
        }
    }

    private static string CacheKey(FileInfo file, string blob) =>
        new System.Text.StringBuilder().Append(file.Length).Append('|').Append(file.LastWriteTimeUtc.Ticks).Append('|').Append(blob).ToString();

    /// <summary>True when this process hashed blob <paramref name="c"/> of <paramref name="weights"/>, as it is now, to <paramref name="sha"/> (not a claim).</summary>
    private bool ComputedHere(string weights, CoeffReference c, byte[] sha)
    {
        var file = new FileInfo(Path.GetFullPath(weights));
        return file.Exists && HashCache.TryGetValue(CacheKey(file, BlobKey(file.FullName, c.Size, Entries, c.Segments)), out var lazy)
            && lazy.IsValueCreated && lazy.Value.AsSpan().SequenceEqual(sha);
    }

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, Lazy<byte[]>> HashCache = new(StringComparer.Ordinal);
    /// <summary>The claims of the piece this thread is compiling (<see cref="UsingHashesOf"/>).</summary>
    [ThreadStatic] private static Dictionary<string, byte[]>? _claims;

    /// <summary>What a coefficient blob's bytes are made of: the weight file, the segments and the CRC-32 and length of each entry they read.</summary>
    private static string BlobKey(string weightFile, long size, IReadOnlyList<WeightFileEntry> entries, IReadOnlyList<CoeffSegment> segments)
    {
        var key = new System.Text.StringBuilder().Append(weightFile).Append('|').Append(size);
        var used = segments.Select(s => s.Key).ToHashSet(StringComparer.Ordinal);
        foreach (var e in entries.Where(e => used.Contains(e.Key)).OrderBy(e => e.Key, StringComparer.Ordinal))
            key.Append('|').Append(e.Key).Append(':').Append(e.Crc32).Append(':').Append(e.DataLength);
        foreach (var s in segments) key.Append('|').Append(s.At).Append(':').Append(s.Key).Append(':').Append(s.Offset).Append(':').Append(s.Run).Append(':').Append(s.Stride).Append(':').Append(s.Count);
        return key.ToString();
    }

    /// <summary>
    /// Runs <paramref name="compile"/> (on this thread) taking the sha256 of the coefficient blobs the bmodel at
    /// <paramref name="bmodelPath"/> — the piece about to be compiled again, e.g. after a SeqLength change — references:
    /// a blob made of the same segments of entries with the same CRC-32s and lengths in the same weight file is not
    /// hashed again. A claim, not a proof: the combine stage checks every streamed blob against its sha256, and a
    /// mismatch is a coded error that deletes the pieces (the next build compiles and hashes them afresh). A bmodel
    /// without references or with unreadable ones claims nothing. The claims serve this compile only.
    /// </summary>
    public static T UsingHashesOf<T>(string bmodelPath, Func<T> compile)
    {
        var claims = new Dictionary<string, byte[]>(StringComparer.Ordinal);
        try
        {
            if (File.Exists(bmodelPath) && TryRead(bmodelPath) is { } old)
            {
                string weights = old.WeightFilePath(bmodelPath);
                foreach (var c in old.Coefficients)
                    if (c.Sha256.Length == 64 && c.Sha256.All(Uri.IsHexDigit))
                        claims[BlobKey(weights, c.Size, old.Entries, c.Segments)] = Convert.FromHexString(c.Sha256);
            }
        }
        catch (Exception e) when (e is LlmBuildException or IOException or UnauthorizedAccessException)
        {
            claims.Clear(); // an unreadable previous bmodel claims nothing: the blobs are hashed
        }
        var outer = _claims;
        _claims = claims;
        try
        {
            return compile();
        }
        finally
        {
            _claims = outer;
        }
    }

    private static byte[] HashUncached(string npzPath, IReadOnlyList<WeightFileEntry> entries, IReadOnlyList<CoeffSegment> segments, long size)
    {
        var references = new PieceCoeffReferences(Path.GetFileName(npzPath), entries, [new CoeffReference("hash", size, "", segments)]);
        using var npz = new NpzReader(npzPath);
        var offsets = entries.ToDictionary(e => e.Key, e => npz.GetEntry(e.Key).DataOffset, StringComparer.Ordinal);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Stream(references.Coefficients[0], npzPath, offsets, null, System.IO.Stream.Null, npzPath, hash);
        return hash.GetHashAndReset();
    }

    /// <summary>
    /// Writes coefficient blob <paramref name="c"/> to <paramref name="output"/> from the weight file, hashing it into
    /// <paramref name="into"/> when given. Otherwise it checks what it streams (<paramref name="sha"/> given): by the
    /// CRC-32 of each of its entries when <paramref name="whole"/> gives them (a sha256 computed here from the bytes of
    /// a blob of whole entries), else by the sha256.
    /// </summary>
    private static void Stream(CoeffReference c, string weights, IReadOnlyDictionary<string, long> offsets, byte[]? sha, Stream output, string bmodelPath,
        IncrementalHash? into = null, Dictionary<string, WeightFileEntry>? whole = null, IReadOnlyDictionary<string, long>? npyOffsets = null)
    {
        if (into is not null || sha is null || npyOffsets is null) whole = null;
        using var own = into is null && sha is not null && whole is null ? IncrementalHash.CreateHash(HashAlgorithmName.SHA256) : null;
        IncrementalHash? hash = into ?? own;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(1 << 20);
        try
        {
            using var file = new FileStream(weights, FileMode.Open, FileAccess.Read, FileShare.Read | FileShare.Delete, 1, FileOptions.SequentialScan);
            long pos = 0;
            void Zeros(long upTo)
            {
                while (pos < upTo)
                {
                    int n = (int)Math.Min(upTo - pos, buffer.Length);
                    buffer.AsSpan(0, n).Clear();
                    hash?.AppendData(buffer, 0, n);
                    output.Write(buffer, 0, n);
                    pos += n;
                }
            }
            foreach (CoeffSegment s in c.Segments.OrderBy(s => s.At))
            {
                Zeros(s.At);
                uint crc = 0;
                if (whole is not null)
                {
                    // The entry's CRC-32 runs over its .npy header, then the data.
                    long npy = npyOffsets![s.Key], header = offsets[s.Key] - npy;
                    if (header < 0 || header > buffer.Length || RandomAccess.Read(file.SafeFileHandle, buffer.AsSpan(0, (int)header), npy) != header)
                        throw new LlmBuildException(ErrorCodes.StaleCoefficientReference, $"'{weights}': the .npy header of entry '{s.Key}' cannot be read: the weight file changed after '{bmodelPath}' was compiled.", bmodelPath);
                    crc = Crc32.Append(0, buffer.AsSpan(0, (int)header));
                }
                for (long k = 0; k < s.Count; k++)
                {
                    long at = offsets[s.Key] + s.Offset + k * s.Stride, left = s.Run;
                    while (left > 0)
                    {
                        int n = RandomAccess.Read(file.SafeFileHandle, buffer.AsSpan(0, (int)Math.Min(left, buffer.Length)), at);
                        if (n <= 0) throw new LlmBuildException(ErrorCodes.StaleCoefficientReference, $"'{weights}' ended while streaming {c.Where} of '{bmodelPath}': the weight file changed after the piece was compiled.", bmodelPath);
                        hash?.AppendData(buffer, 0, n);
                        if (whole is not null) crc = Crc32.Append(crc, buffer.AsSpan(0, n));
                        output.Write(buffer, 0, n);
                        at += n; left -= n; pos += n;
                    }
                }
                if (whole is not null && crc != whole[s.Key].Crc32)
                    throw new LlmBuildException(ErrorCodes.StaleCoefficientReference,
                        $"Entry '{s.Key}' of '{weights}', streamed for {c.Where} of '{bmodelPath}', has CRC-32 {crc:x8}, not the {whole[s.Key].Crc32:x8} its directory and the piece were made with: the weight file changed after the piece was compiled.", bmodelPath);
            }
            Zeros(c.Size);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        if (own is not null && !own.GetHashAndReset().AsSpan().SequenceEqual(sha))
            throw new LlmBuildException(ErrorCodes.StaleCoefficientReference,
                $"The coefficients of {c.Where} streamed from '{weights}' do not match the sha256 '{bmodelPath}' was compiled with: the weight file changed after the piece was compiled.", bmodelPath);
    }

    /// <summary>
    /// The entries of blob <paramref name="c"/> by key when each of its segments is one whole entry read straight through
    /// (so the CRC-32 of the streamed segment is the entry's), else null.
    /// </summary>
    private static Dictionary<string, WeightFileEntry>? WholeEntries(CoeffReference c, IReadOnlyList<WeightFileEntry> entries)
    {
        var byKey = new Dictionary<string, WeightFileEntry>(StringComparer.Ordinal);
        foreach (WeightFileEntry e in entries) byKey.TryAdd(e.Key, e);
        foreach (CoeffSegment s in c.Segments)
            if (!byKey.TryGetValue(s.Key, out var e) || s.Offset != 0 || s.Count != 1 || s.Run != e.DataLength) return null;
        return c.Segments.Select(s => s.Key).Distinct().Count() == c.Segments.Count ? byKey : null;
    }

    /// <summary>A path from <paramref name="fromDirectory"/> to <paramref name="file"/>, with '/' separators.</summary>
    public static string RelativePath(string fromDirectory, string file) =>
        Path.GetRelativePath(Path.GetFullPath(fromDirectory), Path.GetFullPath(file)).Replace(Path.DirectorySeparatorChar, '/');
}

/// <summary>Compile-time JSON metadata for the coefficient reference trailer (default options, as <see cref="PieceCoeffReferences"/> writes it).</summary>
[System.Text.Json.Serialization.JsonSerializable(typeof(PieceCoeffReferences))]
internal sealed partial class PieceCoeffReferencesJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
