using LlmBuild.Core.Checkpoints;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>A checkpoint that reads like <paramref name="inner"/> except for one element of one tensor, which holds <paramref name="value"/>.</summary>
internal sealed class PoisonedCheckpoint(ICheckpoint inner, string tensor, long element, float value) : ICheckpoint
{
    public string Directory => inner.Directory;
    public IReadOnlyList<string> TensorNames => inner.TensorNames;
    public IReadOnlyList<string> Files => inner.Files;
    public bool Contains(string name) => inner.Contains(name);
    public TensorInfo GetInfo(string name) => inner.GetInfo(name);

    public void ReadFloat32(string name, long elementOffset, Span<float> destination)
    {
        inner.ReadFloat32(name, elementOffset, destination);
        if (name == tensor && element >= elementOffset && element < elementOffset + destination.Length) destination[(int)(element - elementOffset)] = value;
    }

    public void ReadRaw(string name, long byteOffset, Span<byte> destination)
    {
        inner.ReadRaw(name, byteOffset, destination);
        if (name != tensor) return;
        TensorInfo info = inner.GetInfo(name);
        int size = DTypes.Size(info.DType);
        long at = element * size - byteOffset;
        if (at < 0 || at + size > destination.Length) return;
        switch (info.DType)
        {
            case TensorDType.BF16: BitConverter.TryWriteBytes(destination.Slice((int)at, 2), (ushort)(BitConverter.SingleToUInt32Bits(value) >> 16)); break;
            case TensorDType.F16: BitConverter.TryWriteBytes(destination.Slice((int)at, 2), BitConverter.HalfToUInt16Bits((Half)value)); break;
            case TensorDType.F32: BitConverter.TryWriteBytes(destination.Slice((int)at, 4), value); break;
        }
    }

    public void Dispose() => inner.Dispose();
}
