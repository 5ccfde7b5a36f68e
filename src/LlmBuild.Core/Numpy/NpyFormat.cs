using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Numpy;

/// <summary>An array's dtype descriptor and shape, as an .npy header states them.</summary>
public sealed record NpyHeader(string Descr, long[] Shape)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public int ItemSize => NpyFormat.ItemSize(Descr);
    public long DataLength => ElementCount * ItemSize;
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// The .npy format (version 1.0): magic <c>\x93NUMPY</c>, version bytes, a little-endian u16 header length, then a
/// Python dict literal <c>{'descr': …, 'fortran_order': False, 'shape': (…), }</c> padded with spaces and a newline
/// so the data starts on a 64-byte boundary, then the C-order data.
/// </summary>
public static partial class NpyFormat
{
    /// <summary>f32.</summary>
    public const string Float32 = "<f4";
    /// <summary>IEEE half.</summary>
    public const string Float16 = "<f2";
    /// <summary>u16; also how bf16 bit patterns are stored (numpy has no bf16).</summary>
    public const string UInt16 = "<u2";
    public const string UInt8 = "|u1";
    public const string Int8 = "|i1";
    public const string Int32 = "<i4";
    public const string Int64 = "<i8";
    public const string Float64 = "<f8";
    public const string Bool = "|b1";

    private static readonly byte[] Magic = [0x93, (byte)'N', (byte)'U', (byte)'M', (byte)'P', (byte)'Y'];

    public static int ItemSize(string descr) => descr switch
    {
        Float32 or Int32 or "<u4" => 4,
        Float16 or UInt16 or "<i2" => 2,
        UInt8 or Int8 or Bool => 1,
        Int64 or Float64 or "<u8" => 8,
        _ => throw new LlmBuildException(ErrorCodes.BadNumpyFile,
            $"npy dtype '{descr}' is not supported (supported: <f4, <f2, <u2, |u1, |i1, <i4, <i8, <f8, |b1, <i2, <u4, <u8)."),
    };

    /// <summary>The header bytes (magic through the newline) for an array of this descr and shape.</summary>
    public static byte[] EncodeHeader(string descr, ReadOnlySpan<long> shape)
    {
        ItemSize(descr);
        var sb = new StringBuilder();
        sb.Append("{'descr': '").Append(descr).Append("', 'fortran_order': False, 'shape': (");
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0) throw new ArgumentException("Shape dimensions must be non-negative.", nameof(shape));
            if (i > 0) sb.Append(", ");
            sb.Append(shape[i].ToString(CultureInfo.InvariantCulture));
        }
        if (shape.Length == 1) sb.Append(',');
        sb.Append("), }");
        int unpadded = Magic.Length + 2 + 2 + sb.Length + 1;
        int total = (unpadded + 63) / 64 * 64;
        if (total - 10 > ushort.MaxValue) throw new ArgumentException("The npy header is too long for format 1.0.", nameof(shape));
        sb.Append(' ', total - unpadded).Append('\n');
        byte[] result = new byte[total];
        Magic.CopyTo(result, 0);
        result[6] = 1;
        result[7] = 0;
        System.Buffers.Binary.BinaryPrimitives.WriteUInt16LittleEndian(result.AsSpan(8), (ushort)(total - 10));
        Encoding.ASCII.GetBytes(sb.ToString(), result.AsSpan(10));
        return result;
    }

    /// <summary>The number of bytes before the header dict (magic, version, length field), given the version byte.</summary>
    internal static int PreludeLength(byte major) => major == 1 ? 10 : 12;

    /// <summary>
    /// Parses a header from the first bytes of an .npy stream; returns the header and its total length (where the data starts).
    /// <paramref name="prefix"/> must hold at least the whole header. <paramref name="where"/> names the file/entry in errors.
    /// </summary>
    public static (NpyHeader Header, int HeaderLength) DecodeHeader(ReadOnlySpan<byte> prefix, string where)
    {
        if (prefix.Length < 10 || !prefix[..6].SequenceEqual(Magic))
            throw Bad(where, "it does not start with the npy magic \\x93NUMPY.");
        byte major = prefix[6];
        if (major is not (1 or 2 or 3)) throw Bad(where, $"npy format version {major}.{prefix[7]} is not supported.");
        int prelude = PreludeLength(major);
        if (prefix.Length < prelude) throw Bad(where, "the header is truncated.");
        long dictLength = major == 1
            ? System.Buffers.Binary.BinaryPrimitives.ReadUInt16LittleEndian(prefix[8..])
            : System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(prefix[8..]);
        if (prelude + dictLength > prefix.Length) throw Bad(where, $"the header length {dictLength} runs past the end of the data.");
        string dict = Encoding.Latin1.GetString(prefix.Slice(prelude, (int)dictLength));
        var m = HeaderPattern().Match(dict);
        if (!m.Success) throw Bad(where, $"the header {dict.Trim()} is not a plain {{'descr', 'fortran_order', 'shape'}} dict.");
        var d = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (Match kv in EntryPattern().Matches(m.Groups[1].Value)) d[kv.Groups[1].Value] = kv.Groups[2].Value.Trim();
        if (!d.TryGetValue("descr", out string? descrText) || !d.TryGetValue("shape", out string? shapeText) || !d.TryGetValue("fortran_order", out string? order))
            throw Bad(where, $"the header {dict.Trim()} lacks descr, fortran_order or shape.");
        if (order != "False") throw Bad(where, "the array is stored in Fortran order; save it C-contiguous (numpy.ascontiguousarray).");
        string descr = descrText.Trim('\'', '"');
        try
        {
            ItemSize(descr);
        }
        catch (LlmBuildException e)
        {
            throw Bad(where, e.Message);
        }
        string inner = shapeText.Trim().TrimStart('(').TrimEnd(')');
        var dims = new List<long>();
        foreach (string part in inner.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (!long.TryParse(part.TrimEnd('L'), NumberStyles.None, CultureInfo.InvariantCulture, out long v)) throw Bad(where, $"shape {shapeText} is not a tuple of integers.");
            dims.Add(v);
        }
        // Readers multiply the shape into element and byte counts: a shape whose bytes overflow a long is a damaged header.
        try { _ = dims.Aggregate((long)ItemSize(descr), (a, b) => checked(a * b)); }
        catch (OverflowException) { throw Bad(where, $"shape {shapeText} of {descr} is larger than any file."); }
        return (new NpyHeader(descr, dims.ToArray()), prelude + (int)dictLength);
    }

    [GeneratedRegex(@"^\s*\{(.*)\}\s*$", RegexOptions.Singleline)]
    private static partial Regex HeaderPattern();

    [GeneratedRegex(@"'(descr|fortran_order|shape)'\s*:\s*('[^']*'|""[^""]*""|\([^)]*\)|True|False)")]
    private static partial Regex EntryPattern();

    private static LlmBuildException Bad(string where, string what) =>
        new(ErrorCodes.BadNumpyFile, $"'{where}' is not a readable .npy array: {what}", where);
}
