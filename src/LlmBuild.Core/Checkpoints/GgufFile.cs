using System.Buffers.Binary;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Checkpoints;

/// <summary>GGUF metadata value types, by the id the file stores.</summary>
public enum GgufValueType : uint
{
    UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7, String = 8, Array = 9,
    UInt64 = 10, Int64 = 11, Float64 = 12,
}

/// <summary>A metadata array: its element type and values (string[], long[], ulong[], double[], bool[]).</summary>
public sealed record GgufArray(GgufValueType ElementType, Array Values);

/// <summary>
/// A tensor as the GGUF file describes it: <paramref name="Dims"/> innermost first (ggml's ne[0] = row length),
/// its type, and its data's absolute byte range in the file.
/// </summary>
public sealed record GgufTensor(string Name, long[] Dims, GgmlType Type, long Offset, long ByteLength)
{
    public long ElementCount => Dims.Aggregate(1L, (a, b) => a * b);
    public long RowLength => Dims[0];
    public long Rows => ElementCount / Dims[0];
    public long RowBytes => ByteLength / Rows;
}

/// <summary>
/// A GGUF file's header, parsed strictly from a read-only mapping: magic "GGUF", version 2 or 3, the metadata
/// key/values (every value type, arrays of any non-array type), the tensor infos, the alignment
/// (<c>general.alignment</c>, default 32) and the data section. Every count, length and offset is checked against
/// the file with checked arithmetic before it is used, so a malformed or hostile file yields a coded error and
/// never an out-of-range read or a huge allocation. Integers are little-endian (big-endian files fail the version
/// check). Tensor data is not read here; <see cref="GgufCheckpoint"/> maps it on demand.
/// </summary>
public sealed class GgufFile
{
    /// <summary>"GGUF" read as a little-endian u32.</summary>
    public const uint Magic = 0x46554747;
    public const long DefaultAlignment = 32;
    /// <summary>ggml's largest tensor rank.</summary>
    public const int MaxDims = 4;

    private GgufFile(string path, uint version, Dictionary<string, object> metadata, List<GgufTensor> tensors, long alignment, long dataOffset)
    {
        Path = path;
        Version = version;
        Metadata = metadata;
        Tensors = tensors;
        Alignment = alignment;
        DataOffset = dataOffset;
    }

    public string Path { get; }
    public uint Version { get; }
    /// <summary>Values: byte, sbyte, ushort, short, uint, int, float, bool, string, ulong, long, double or <see cref="GgufArray"/>.</summary>
    public IReadOnlyDictionary<string, object> Metadata { get; }
    /// <summary>In file order.</summary>
    public IReadOnlyList<GgufTensor> Tensors { get; }
    public long Alignment { get; }
    public long DataOffset { get; }

    /// <summary>Parses the header of the GGUF file at <paramref name="path"/>.</summary>
    public static GgufFile Read(string path)
    {
        using var file = new MappedFile(System.IO.Path.GetFullPath(path));
        return Read(file);
    }

    internal static GgufFile Read(MappedFile file)
    {
        using var view = file.Map(0, file.Length);
        var r = new Cursor(view, file.Path);
        if (file.Length < 24 || r.U32() != Magic)
            throw new LlmBuildException(ErrorCodes.BadGgufHeader, $"'{file.Path}' is not a GGUF file: it does not start with the magic \"GGUF\".", file.Path);
        uint version = r.U32();
        if (version is not (2 or 3))
            throw new LlmBuildException(ErrorCodes.BadGgufHeader,
                $"'{file.Path}' is GGUF version {version}; LlmBuild reads versions 2 and 3 (little-endian). Convert it again with a current llama.cpp.", file.Path);
        ulong tensorCount = r.U64(), kvCount = r.U64();
        // Each key/value needs at least 12 bytes (key length + type) and each tensor info at least 24: counts beyond that cannot fit.
        if (kvCount > (ulong)(file.Length / 12) || tensorCount > (ulong)(file.Length / 24))
            throw new LlmBuildException(ErrorCodes.BadGgufHeader,
                $"'{file.Path}' claims {tensorCount} tensors and {kvCount} metadata entries, more than its {file.Length} bytes can hold. The file is corrupt.", file.Path);

        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            string key = r.String("metadata key");
            var type = (GgufValueType)r.U32();
            object value = r.Value(type, key, allowArray: true);
            if (!metadata.TryAdd(key, value))
                throw r.Metadata($"metadata key '{key}' appears twice");
        }

        long alignment = DefaultAlignment;
        if (metadata.TryGetValue("general.alignment", out object? a))
        {
            if (a is not uint align || align == 0 || (align & (align - 1)) != 0)
                throw new LlmBuildException(ErrorCodes.BadGgufAlignment,
                    $"'{file.Path}': general.alignment is {Describe(a)}; it must be a u32 power of two.", file.Path);
            alignment = align;
        }

        var infos = new List<(string Name, long[] Dims, GgmlType Type, ulong Offset)>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            string name = r.String("tensor name");
            if (!names.Add(name)) throw TensorInfo(file.Path, $"tensor '{name}' appears twice");
            uint rank = r.U32();
            if (rank is 0 or > MaxDims) throw TensorInfo(file.Path, $"tensor '{name}' has {rank} dimensions (1 to {MaxDims} allowed)");
            var dims = new long[rank];
            for (int d = 0; d < rank; d++)
            {
                ulong size = r.U64();
                if (size is 0 or > long.MaxValue) throw TensorInfo(file.Path, $"tensor '{name}' has dimension {d} of size {size}");
                dims[d] = (long)size;
            }
            var type = (GgmlType)r.U32();
            infos.Add((name, dims, type, r.U64()));
        }
        long dataOffset = AlignUp(r.Position, alignment, file.Path);
        if (dataOffset > file.Length && infos.Count > 0)
            throw new LlmBuildException(ErrorCodes.BadGgufTensorData, $"'{file.Path}' ends before its tensor data begins (offset {dataOffset}). The file is truncated.", file.Path);

        var tensors = new List<GgufTensor>(infos.Count);
        foreach (var (name, dims, type, offset) in infos)
        {
            var layout = GgmlTypes.Layout(type) ?? throw new LlmBuildException(ErrorCodes.UnsupportedGgmlType,
                $"'{file.Path}': tensor '{name}' has ggml type {GgmlTypes.Name(type)}, which LlmBuild cannot read. Supported: F32, F16, BF16, " +
                "Q8_0 and Q4_0 (kept exactly), Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (dequantized exactly). Quantize the model again with one of them.", file.Path);
            long elements, bytes;
            try
            {
                elements = dims.Aggregate(1L, (x, y) => checked(x * y));
                if (dims[0] % layout.BlockElements != 0)
                    throw TensorInfo(file.Path, $"tensor '{name}' has rows of {dims[0]} elements, not a whole number of {GgmlTypes.Name(type)} blocks ({layout.BlockElements})");
                bytes = checked(elements / layout.BlockElements * layout.BlockBytes);
            }
            catch (OverflowException)
            {
                throw TensorInfo(file.Path, $"tensor '{name}' of shape [{string.Join(", ", dims)}] is too large");
            }
            if (offset % (ulong)alignment != 0)
                throw new LlmBuildException(ErrorCodes.BadGgufAlignment,
                    $"'{file.Path}': tensor '{name}' starts at data offset {offset}, which is not a multiple of the alignment {alignment}.", file.Path);
            if (offset > (ulong)file.Length || (long)offset > file.Length - dataOffset || bytes > file.Length - dataOffset - (long)offset)
                throw new LlmBuildException(ErrorCodes.BadGgufTensorData,
                    $"'{file.Path}': tensor '{name}' ({bytes} bytes at data offset {offset}) extends past the end of the file ({file.Length} bytes). The file is truncated or corrupt.", file.Path);
            tensors.Add(new GgufTensor(name, dims, type, dataOffset + (long)offset, bytes));
        }
        GgufTensor? previous = null;
        foreach (var t in tensors.OrderBy(t => t.Offset))
        {
            if (previous is not null && t.Offset < previous.Offset + previous.ByteLength)
                throw new LlmBuildException(ErrorCodes.BadGgufTensorData,
                    $"'{file.Path}': the data of tensors '{previous.Name}' and '{t.Name}' overlap. The file is corrupt.", file.Path);
            previous = t;
        }
        return new GgufFile(file.Path, version, metadata, tensors, alignment, dataOffset);
    }

    private static long AlignUp(long position, long alignment, string path)
    {
        try
        {
            return checked((position + alignment - 1) / alignment * alignment);
        }
        catch (OverflowException)
        {
            throw new LlmBuildException(ErrorCodes.BadGgufAlignment, $"'{path}': the data section cannot be aligned.", path);
        }
    }

    private static LlmBuildException TensorInfo(string path, string what) =>
        new(ErrorCodes.BadGgufTensorInfo, $"'{path}': {what}. The file is corrupt.", path);

    internal static string Describe(object? value) => value switch
    {
        null => "missing",
        string s => $"the string \"{s}\"",
        GgufArray a => $"an array of {a.Values.Length} {a.ElementType}",
        _ => $"{value} ({value.GetType().Name})",
    };

    /// <summary>The f32 values of a small F32 tensor (metadata-like tensors such as RoPE factors), read from the file.</summary>
    public float[] ReadFloat32Tensor(GgufTensor tensor)
    {
        if (tensor.Type != GgmlType.F32 || tensor.ElementCount > 1 << 20)
            throw new LlmBuildException(ErrorCodes.BadGgufTensorInfo, $"'{Path}': tensor '{tensor.Name}' is {GgmlTypes.Name(tensor.Type)} with {tensor.ElementCount} elements; a small F32 vector is expected.", Path);
        using var file = new MappedFile(Path);
        float[] values = new float[tensor.ElementCount];
        file.Read(tensor.Offset, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }

    // ---- typed metadata access; a wrong type is a coded error naming the key ----

    public bool Has(string key) => Metadata.ContainsKey(key);

    public string? String(string key) => Metadata.TryGetValue(key, out object? v)
        ? v as string ?? throw WrongType(key, "a string", v) : null;

    /// <summary>An integer of any width (signed or unsigned, within long's range).</summary>
    public long? Integer(string key)
    {
        if (!Metadata.TryGetValue(key, out object? v)) return null;
        return v switch
        {
            byte x => x, sbyte x => x, ushort x => x, short x => x, uint x => x, int x => x, long x => x,
            ulong x when x <= long.MaxValue => (long)x,
            _ => throw WrongType(key, "an integer", v),
        };
    }

    public double? Number(string key)
    {
        if (!Metadata.TryGetValue(key, out object? v)) return null;
        return v switch
        {
            // The shortest decimal that round-trips the f32 (1e-06, not 9.99999997e-07): what the converter was given.
            float f => double.Parse(f.ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture),
            double d => d,
            _ when v is not GgufArray and not string and not bool => Integer(key),
            _ => throw WrongType(key, "a number", v),
        };
    }

    public bool? Bool(string key) => Metadata.TryGetValue(key, out object? v) ? v as bool? ?? throw WrongType(key, "a bool", v) : null;

    public string[]? Strings(string key) => Metadata.TryGetValue(key, out object? v)
        ? (v as GgufArray)?.Values as string[] ?? throw WrongType(key, "an array of strings", v) : null;

    public long[]? Integers(string key) => Metadata.TryGetValue(key, out object? v)
        ? (v as GgufArray)?.Values as long[] ?? throw WrongType(key, "an array of integers", v) : null;

    public double[]? Numbers(string key)
    {
        if (!Metadata.TryGetValue(key, out object? v)) return null;
        return (v as GgufArray)?.Values switch
        {
            double[] d => d,
            long[] l => l.Select(x => (double)x).ToArray(),
            _ => throw WrongType(key, "an array of numbers", v),
        };
    }

    private LlmBuildException WrongType(string key, string expected, object value) =>
        new(ErrorCodes.BadGgufMetadata, $"'{Path}': metadata key '{key}' is {Describe(value)}; expected {expected}.", Path);

    /// <summary>A bounds-checked little-endian reader over the mapped file.</summary>
    private sealed class Cursor(MappedFile.View view, string path)
    {
        private static readonly UTF8Encoding StrictUtf8 = new(false, true);

        public long Position { get; private set; }

        private ReadOnlySpan<byte> Take(long count, string what)
        {
            if (count < 0 || count > view.Length - Position)
                throw new LlmBuildException(ErrorCodes.BadGgufHeader,
                    $"'{path}' ends inside {what} (needs {count} bytes at offset {Position}, the file has {view.Length}). The file is truncated or corrupt.", path);
            var span = count == 0 ? ReadOnlySpan<byte>.Empty : view.Slice(Position, checked((int)count));
            Position += count;
            return span;
        }

        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, "a u32"));
        public ulong U64() => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, "a u64"));

        public string String(string what)
        {
            ulong length = U64();
            if (length > (ulong)(view.Length - Position) || length > int.MaxValue)
                throw Metadata($"{what} at offset {Position - 8} claims {length} bytes, past the end of the file");
            try
            {
                return StrictUtf8.GetString(Take((long)length, what));
            }
            catch (DecoderFallbackException)
            {
                throw Metadata($"{what} at offset {Position - (long)length} is not valid UTF-8");
            }
        }

        public object Value(GgufValueType type, string key, bool allowArray)
        {
            switch (type)
            {
                case GgufValueType.UInt8: return Take(1, key)[0];
                case GgufValueType.Int8: return (sbyte)Take(1, key)[0];
                case GgufValueType.UInt16: return BinaryPrimitives.ReadUInt16LittleEndian(Take(2, key));
                case GgufValueType.Int16: return BinaryPrimitives.ReadInt16LittleEndian(Take(2, key));
                case GgufValueType.UInt32: return BinaryPrimitives.ReadUInt32LittleEndian(Take(4, key));
                case GgufValueType.Int32: return BinaryPrimitives.ReadInt32LittleEndian(Take(4, key));
                case GgufValueType.Float32: return BinaryPrimitives.ReadSingleLittleEndian(Take(4, key));
                case GgufValueType.UInt64: return BinaryPrimitives.ReadUInt64LittleEndian(Take(8, key));
                case GgufValueType.Int64: return BinaryPrimitives.ReadInt64LittleEndian(Take(8, key));
                case GgufValueType.Float64: return BinaryPrimitives.ReadDoubleLittleEndian(Take(8, key));
                case GgufValueType.Bool:
                    byte b = Take(1, key)[0];
                    return b switch { 0 => false, 1 => true, _ => throw Metadata($"'{key}' holds bool byte {b} (0 or 1 allowed)") };
                case GgufValueType.String: return String($"the value of '{key}'");
                case GgufValueType.Array when allowArray: return Array(key);
                case GgufValueType.Array: throw Metadata($"'{key}' is an array of arrays, which LlmBuild does not read");
                default: throw Metadata($"'{key}' has value type {(uint)type}, which GGUF does not define");
            }
        }

        private GgufArray Array(string key)
        {
            var elementType = (GgufValueType)U32();
            ulong count = U64();
            int minSize = elementType switch
            {
                GgufValueType.UInt8 or GgufValueType.Int8 or GgufValueType.Bool => 1,
                GgufValueType.UInt16 or GgufValueType.Int16 => 2,
                GgufValueType.UInt32 or GgufValueType.Int32 or GgufValueType.Float32 => 4,
                _ => 8, // 64-bit values, and strings (their u64 length)
            };
            if (count > (ulong)((view.Length - Position) / minSize) || count > int.MaxValue)
                throw Metadata($"array '{key}' claims {count} elements, more than the rest of the file holds");
            int n = (int)count;
            switch (elementType)
            {
                case GgufValueType.String:
                {
                    var values = new string[n];
                    for (int i = 0; i < n; i++) values[i] = String($"element {i} of '{key}'");
                    return new GgufArray(elementType, values);
                }
                case GgufValueType.Float32 or GgufValueType.Float64:
                {
                    var values = new double[n];
                    for (int i = 0; i < n; i++) values[i] = Convert.ToDouble(Value(elementType, key, false), System.Globalization.CultureInfo.InvariantCulture);
                    return new GgufArray(elementType, values);
                }
                case GgufValueType.Bool:
                {
                    var values = new bool[n];
                    for (int i = 0; i < n; i++) values[i] = (bool)Value(elementType, key, false);
                    return new GgufArray(elementType, values);
                }
                case GgufValueType.UInt64:
                {
                    var values = new long[n];
                    for (int i = 0; i < n; i++)
                    {
                        ulong v = U64();
                        values[i] = v <= long.MaxValue ? (long)v : throw Metadata($"element {i} of '{key}' ({v}) is out of range");
                    }
                    return new GgufArray(elementType, values);
                }
                case GgufValueType.Array:
                    throw Metadata($"'{key}' is an array of arrays, which LlmBuild does not read");
                default:
                {
                    if (elementType > GgufValueType.Float64) throw Metadata($"array '{key}' has element type {(uint)elementType}, which GGUF does not define");
                    var values = new long[n];
                    for (int i = 0; i < n; i++) values[i] = Convert.ToInt64(Value(elementType, key, false), System.Globalization.CultureInfo.InvariantCulture);
                    return new GgufArray(elementType, values);
                }
            }
        }

        public LlmBuildException Metadata(string what) =>
            new(ErrorCodes.BadGgufMetadata, $"'{path}': {what}. The file is corrupt.", path);
    }
}
