using System.Runtime.InteropServices;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numerics;

namespace LlmBuild.Core.Numpy;

/// <summary>A single .npy array file (e.g. logits written by the CLI), written atomically.</summary>
public static class NpyFile
{
    public static void Write(string path, string npyDescr, long[] shape, ReadOnlySpan<byte> littleEndianData)
    {
        var header = new NpyHeader(npyDescr, shape);
        if (littleEndianData.Length != header.DataLength)
            throw new ArgumentException($"{npyDescr} {header.ShapeText} needs {header.DataLength} bytes, got {littleEndianData.Length}.");
        byte[] bytes = new byte[NpyFormat.EncodeHeader(npyDescr, shape).Length + littleEndianData.Length];
        NpyFormat.EncodeHeader(npyDescr, shape).CopyTo(bytes, 0);
        littleEndianData.CopyTo(bytes.AsSpan(bytes.Length - littleEndianData.Length));
        AtomicFile.WriteAllBytes(path, bytes);
    }

    public static void WriteFloat32(string path, ReadOnlySpan<float> data, long[] shape) =>
        Write(path, NpyFormat.Float32, shape, MemoryMarshal.AsBytes(data));

    public static void WriteInt32(string path, ReadOnlySpan<int> data, long[] shape) =>
        Write(path, NpyFormat.Int32, shape, MemoryMarshal.AsBytes(data));

    /// <summary>Reads an .npy file: its header and data bytes.</summary>
    public static (NpyHeader Header, byte[] Data) Read(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read '{path}': {e.Message}", path, e);
        }
        var (header, length) = NpyFormat.DecodeHeader(bytes, path);
        if (bytes.Length - length != header.DataLength)
            throw new LlmBuildException(ErrorCodes.BadNumpyFile,
                $"'{path}' holds {bytes.Length - length} data bytes but its header says {header.Descr} {header.ShapeText} = {header.DataLength} bytes. It is truncated or corrupt.", path);
        return (header, bytes[length..]);
    }

    /// <summary>Reads an .npy float array ('&lt;f4', '&lt;f2', '&lt;f8', or '&lt;u2' as bf16 bits) as f32.</summary>
    public static (long[] Shape, float[] Data) ReadFloat32(string path, bool uint16IsBFloat16 = true)
    {
        var (header, data) = Read(path);
        float[] result = new float[header.ElementCount];
        switch (header.Descr)
        {
            case NpyFormat.Float32: MemoryMarshal.Cast<byte, float>(data).CopyTo(result); break;
            case NpyFormat.Float16: FloatFormats.HalfToFloat(MemoryMarshal.Cast<byte, ushort>(data), result); break;
            case NpyFormat.UInt16 when uint16IsBFloat16: FloatFormats.BFloat16ToFloat(MemoryMarshal.Cast<byte, ushort>(data), result); break;
            case NpyFormat.Float64:
                var d = MemoryMarshal.Cast<byte, double>(data);
                for (int i = 0; i < d.Length; i++) result[i] = (float)d[i];
                break;
            default:
                throw new LlmBuildException(ErrorCodes.BadNumpyFile, $"'{path}' has dtype '{header.Descr}', not a float type.", path);
        }
        return (header.Shape, result);
    }
}
