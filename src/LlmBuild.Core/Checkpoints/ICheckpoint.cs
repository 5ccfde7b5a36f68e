namespace LlmBuild.Core.Checkpoints;

/// <summary>Element types a checkpoint tensor may have.</summary>
public enum TensorDType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool, F8E4M3, F8E5M2 }

/// <summary>A tensor's metadata: name, dtype, shape, and the file it lives in.</summary>
public sealed record TensorInfo(string Name, TensorDType DType, long[] Shape, string File)
{
    public long ElementCount => Shape.Aggregate(1L, (a, b) => a * b);
    public long ByteLength => ElementCount * DTypes.Size(DType);
    public string ShapeText => "[" + string.Join(", ", Shape) + "]";
}

/// <summary>
/// A checkpoint opened for lazy reading: tensors are memory-mapped (or streamed) on demand, never all loaded.
/// Implementations: safetensors (single or sharded), pytorch .bin (restricted unpickler).
/// Thread-safe for concurrent reads of different tensors.
/// </summary>
public interface ICheckpoint : IDisposable
{
    /// <summary>The checkpoint's directory (used in messages).</summary>
    string Directory { get; }

    /// <summary>Every tensor name, sorted ordinally.</summary>
    IReadOnlyList<string> TensorNames { get; }

    /// <summary>The weight files this checkpoint reads, relative to its directory, sorted.</summary>
    IReadOnlyList<string> Files { get; }

    bool Contains(string name);

    /// <summary>Metadata of a tensor; a coded error naming the checkpoint when absent.</summary>
    TensorInfo GetInfo(string name);

    /// <summary>Reads a float tensor (F32/F16/BF16/F64/F8E4M3/F8E5M2) converted to f32, row-major, into <paramref name="destination"/>.</summary>
    void ReadFloat32(string name, Span<float> destination) => ReadFloat32(name, 0, destination);

    /// <summary>Copies a tensor's raw little-endian bytes into <paramref name="destination"/>.</summary>
    void ReadRaw(string name, Span<byte> destination) => ReadRaw(name, 0, destination);

    /// <summary>
    /// Reads <c>destination.Length</c> elements starting at element <paramref name="elementOffset"/> (row-major) converted to
    /// f32: the streaming form, so a large tensor can be processed a block of rows at a time.
    /// </summary>
    void ReadFloat32(string name, long elementOffset, Span<float> destination);

    /// <summary>Copies <c>destination.Length</c> raw bytes of a tensor starting at byte <paramref name="byteOffset"/>.</summary>
    void ReadRaw(string name, long byteOffset, Span<byte> destination);
}
