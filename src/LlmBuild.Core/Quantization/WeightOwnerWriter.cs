using System.Buffers;
using System.Runtime.InteropServices;
using LlmBuild.Core.Checkpoints;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.IO;
using LlmBuild.Core.Numerics;
using LlmBuild.Core.Numpy;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Quantization;

/// <summary>
/// The core of the QuantizeLlmWeights stage: writes one weight owner's npz (DESIGN §5) from the source checkpoint,
/// entry by entry in the owner's order. Activation entries are stored in the activation dtype (bf16 as '&lt;u2' bit
/// patterns, f16 as '&lt;f2'), Float32 entries as '&lt;f4', Quantized entries as three arrays (qweight, scales,
/// qzeros) in the A16MatMul layout. Pre-quantized sources (GPTQ, AWQ, AutoRound, compressed-tensors, GGUF Q8_0/Q4_0) are unpacked
/// into the same layout instead of being quantized again. Tensors are streamed a block of rows at a time, so memory
/// stays near one block, not one checkpoint; the file is written atomically and its bytes are deterministic.
/// </summary>
public static class WeightOwnerWriter
{
    /// <summary>Elements converted per streamed block (16 MiB of f32).</summary>
    internal const int BlockElements = 1 << 22;

    /// <param name="overrides">Calibration's decisions for this owner (QuantizeMethod gptq/awq); null: round to nearest.</param>
    /// <param name="addMore">Adds entries after the weights (the constants of the pieces that name this file).</param>
    public static void Write(ICheckpoint checkpoint, ResolvedModel model, WeightOwner owner, string npzPath, WeightOverrides? overrides = null, Action<NpzWriter>? addMore = null)
    {
        AtomicFile.Write(npzPath, stream => Write(checkpoint, model, owner, stream, overrides, addMore));
    }

    /// <summary>Writes the owner's npz into a seekable stream (the file form above adds the atomic rename).</summary>
    public static void Write(ICheckpoint checkpoint, ResolvedModel model, WeightOwner owner, Stream destination, WeightOverrides? overrides = null, Action<NpzWriter>? addMore = null)
    {
        var source = PreQuantizedFormat.FromConfig(model.Config.QuantizationConfig, "config.json quantization_config");
        using var npz = new NpzWriter(destination, leaveOpen: true);
        // A tied head reads the embedding's entry again (same key): the file stores it once.
        var written = new HashSet<string>(StringComparer.Ordinal);
        foreach (var entry in owner.Entries)
        {
            if (!written.Add(entry.Key)) continue;
            if (overrides is not null && overrides.Quantized.TryGetValue(entry.SourceTensor, out QuantizedLinear? q)) WriteGiven(entry, q, model, npz, checkpoint.Directory);
            else if (overrides is not null && overrides.Floats.TryGetValue(entry.SourceTensor, out float[]? w)) WriteGiven(entry, w, model, npz, checkpoint.Directory);
            else WriteEntry(checkpoint, model, source, entry, npz);
        }
        addMore?.Invoke(npz);
        npz.Finish();
    }

    private static void WriteEntry(ICheckpoint checkpoint, ResolvedModel model, PreQuantizedFormat? source, WeightEntry entry, NpzWriter npz)
    {
        bool packed = source is not null && !checkpoint.Contains(entry.SourceTensor) && PreQuantizedUnpacker.IsPacked(checkpoint, entry.SourceTensor);
        // GGUF Q8_0/Q4_0 blocks already in the scheme's layout are kept; other GGUF tensors read as exact floats below.
        bool ggufExact = source?.Layout == PackingLayout.GgufBlocks && entry.Storage == WeightStorage.Quantized
            && GgufBlockUnpacker.KeepsExactly(checkpoint, entry.SourceTensor, model.SchemeOf(entry).Bits, model.Weights.GroupSize, model.Weights.Symmetric);
        if (source is not null && (packed || ggufExact))
        {
            WritePreQuantized(checkpoint, model, source, entry, npz);
            return;
        }
        TensorInfo info = checkpoint.GetInfo(entry.SourceTensor);
        CheckShape(info, entry);
        DTypes.RequireFloat(info);
        switch (entry.Storage)
        {
            case WeightStorage.Activation: WriteActivation(checkpoint, info, entry.Key, model.ActivationDtype, npz); break;
            case WeightStorage.Float32: WriteFloat32(checkpoint, info, entry.Key, npz); break;
            case WeightStorage.Quantized: WriteQuantized(checkpoint, info, entry, model.SchemeOf(entry), npz); break;
            default: throw new InvalidOperationException($"Unknown storage {entry.Storage}.");
        }
    }

    internal static void CheckShape(TensorInfo info, WeightEntry entry)
    {
        if (!info.Shape.AsSpan().SequenceEqual(entry.Shape))
            throw new LlmBuildException(ErrorCodes.TensorShapeMismatch,
                $"Tensor '{info.Name}' in '{info.File}' has shape {info.ShapeText}, but config.json implies [{string.Join(", ", entry.Shape)}] for {entry.Role}. " +
                "The checkpoint and config.json do not belong together.", info.File);
    }

    private static string ActivationDescr(string activationDtype) => activationDtype switch
    {
        "bf16" => NpyFormat.UInt16,
        "f16" => NpyFormat.Float16,
        "f32" => NpyFormat.Float32,
        _ => throw new ArgumentException($"Activation dtype must be bf16, f16 or f32, not '{activationDtype}'."),
    };

    private static void WriteActivation(ICheckpoint checkpoint, TensorInfo info, string key, string activationDtype, NpzWriter npz)
    {
        string descr = ActivationDescr(activationDtype);
        if (activationDtype == "f32")
        {
            WriteFloat32(checkpoint, info, key, npz);
            return;
        }
        TensorDType target = activationDtype == "bf16" ? TensorDType.BF16 : TensorDType.F16;
        npz.AddStreamed(key, descr, info.Shape, sink =>
        {
            if (info.DType == target)
            {
                CopyRaw(checkpoint, info, sink);
                return;
            }
            float[] floats = ArrayPool<float>.Shared.Rent(BlockElements);
            ushort[] bits = ArrayPool<ushort>.Shared.Rent(BlockElements);
            try
            {
                for (long done = 0; done < info.ElementCount; done += BlockElements)
                {
                    int n = (int)Math.Min(BlockElements, info.ElementCount - done);
                    checkpoint.ReadFloat32(info.Name, done, floats.AsSpan(0, n));
                    if (target == TensorDType.BF16) FloatFormats.FloatToBFloat16(floats.AsSpan(0, n), bits.AsSpan(0, n));
                    else FloatFormats.FloatToHalf(floats.AsSpan(0, n), bits.AsSpan(0, n));
                    // The stored bits, not the source: a finite f32 beyond ±65504 becomes infinity in f16.
                    NonFiniteCheck.Bits16(bits.AsSpan(0, n), target, info.Name, info.Shape, done, info.File);
                    sink.Write(MemoryMarshal.AsBytes(bits.AsSpan(0, n)));
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(floats);
                ArrayPool<ushort>.Shared.Return(bits);
            }
        });
    }

    private static void CopyRaw(ICheckpoint checkpoint, TensorInfo info, Stream sink)
    {
        byte[] buffer = ArrayPool<byte>.Shared.Rent(BlockElements);
        try
        {
            for (long done = 0; done < info.ByteLength; done += BlockElements)
            {
                int n = (int)Math.Min(BlockElements, info.ByteLength - done);
                checkpoint.ReadRaw(info.Name, done, buffer.AsSpan(0, n));
                NonFiniteCheck.Raw(buffer.AsSpan(0, n), info.DType, info.Name, info.Shape, done / DTypes.Size(info.DType), info.File);
                sink.Write(buffer, 0, n);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void WriteFloat32(ICheckpoint checkpoint, TensorInfo info, string key, NpzWriter npz)
    {
        npz.AddStreamed(key, NpyFormat.Float32, info.Shape, sink =>
        {
            if (info.DType == TensorDType.F32)
            {
                CopyRaw(checkpoint, info, sink);
                return;
            }
            float[] floats = ArrayPool<float>.Shared.Rent(BlockElements);
            try
            {
                for (long done = 0; done < info.ElementCount; done += BlockElements)
                {
                    int n = (int)Math.Min(BlockElements, info.ElementCount - done);
                    checkpoint.ReadFloat32(info.Name, done, floats.AsSpan(0, n));
                    NonFiniteCheck.Float32(floats.AsSpan(0, n), info.Name, info.Shape, done, info.File);
                    sink.Write(MemoryMarshal.AsBytes(floats.AsSpan(0, n)));
                }
            }
            finally
            {
                ArrayPool<float>.Shared.Return(floats);
            }
        });
    }

    private static void WriteQuantized(ICheckpoint checkpoint, TensorInfo info, WeightEntry entry, QuantScheme scheme, NpzWriter npz)
    {
        if (!scheme.IsQuantized)
            throw new InvalidOperationException($"Entry '{entry.Key}' is stored quantized but the model's scheme has {scheme.Bits} bits.");
        if (info.Shape.Length != 2)
            throw new LlmBuildException(ErrorCodes.TensorShapeMismatch,
                $"Tensor '{info.Name}' in '{info.File}' has shape {info.ShapeText}; a quantized linear weight must be 2-D [out, in].", info.File);
        int n = checked((int)info.Shape[0]), k = checked((int)info.Shape[1]);
        int g = LinearQuantizer.EffectiveGroupSize(k, scheme.GroupSize, scheme.Bits, info.Name);
        int groups = k / g, rowBytes = scheme.Bits == 4 ? k / 2 : k;
        float[] scales = new float[(long)n * groups];
        byte[] zeros = new byte[(long)n * groups];
        npz.AddStreamed(WeightKeys.QWeight(entry.Key), NpyFormat.UInt8, [n, rowBytes], sink =>
        {
            int blockRows = Math.Max(1, BlockElements / k);
            // bf16 (most checkpoints): the raw bits go to the quantizer, which widens a row at a time in cache.
            bool bf16 = info.DType == TensorDType.BF16;
            float[]? w = bf16 ? null : ArrayPool<float>.Shared.Rent(blockRows * k);
            byte[]? raw = bf16 ? ArrayPool<byte>.Shared.Rent(blockRows * k * 2) : null;
            byte[] q = ArrayPool<byte>.Shared.Rent(blockRows * rowBytes);
            try
            {
                for (int r = 0; r < n; r += blockRows)
                {
                    int rows = Math.Min(blockRows, n - r);
                    if (raw is not null)
                    {
                        checkpoint.ReadRaw(info.Name, (long)r * k * 2, raw.AsSpan(0, rows * k * 2));
                        LinearQuantizer.QuantizeRowsBFloat16(MemoryMarshal.Cast<byte, ushort>(raw.AsSpan(0, rows * k * 2)), rows, k, scheme.Bits, g, scheme.Symmetric,
                            q.AsSpan(0, rows * rowBytes), scales.AsSpan(r * groups, rows * groups), zeros.AsSpan(r * groups, rows * groups), info.Name);
                    }
                    else
                    {
                        checkpoint.ReadFloat32(info.Name, (long)r * k, w.AsSpan(0, rows * k));
                        LinearQuantizer.QuantizeRows(w.AsSpan(0, rows * k), rows, k, scheme.Bits, g, scheme.Symmetric,
                            q.AsSpan(0, rows * rowBytes), scales.AsSpan(r * groups, rows * groups), zeros.AsSpan(r * groups, rows * groups), info.Name);
                    }
                    sink.Write(q, 0, rows * rowBytes);
                }
            }
            finally
            {
                if (w is not null) ArrayPool<float>.Shared.Return(w);
                if (raw is not null) ArrayPool<byte>.Shared.Return(raw);
                ArrayPool<byte>.Shared.Return(q);
            }
        });
        npz.AddFloat32(WeightKeys.Scales(entry.Key), scales, [n, groups]);
        npz.AddUInt8(WeightKeys.QZeros(entry.Key), zeros, [n, groups]);
    }

    private static void WritePreQuantized(ICheckpoint checkpoint, ResolvedModel model, PreQuantizedFormat source, WeightEntry entry, NpzWriter npz)
    {
        QuantizedLinear q = PreQuantizedUnpacker.Unpack(checkpoint, source, entry.SourceTensor);
        if (entry.Shape.Length != 2 || entry.Shape[0] != q.N || entry.Shape[1] != q.K)
            throw new LlmBuildException(ErrorCodes.TensorShapeMismatch,
                $"Pre-quantized tensor '{entry.SourceTensor}' unpacks to [{q.N}, {q.K}], but config.json implies [{string.Join(", ", entry.Shape)}] for {entry.Role}.",
                checkpoint.Directory);
        WriteGiven(entry, q, model, npz, checkpoint.Directory);
    }

    /// <summary>Stores an already quantized linear: as it is when the entry is quantized, else dequantized in source order.</summary>
    private static void WriteGiven(WeightEntry entry, QuantizedLinear q, ResolvedModel model, NpzWriter npz, string where)
    {
        switch (entry.Storage)
        {
            case WeightStorage.Quantized:
                // Resolve decided whether the graph gathers this weight's input; the data must agree.
                if ((q.InputPermutation is not null) != entry.InputPermuted)
                    throw new LlmBuildException(ErrorCodes.StaleIntermediate,
                        $"'{entry.SourceTensor}' {(entry.InputPermuted ? "no longer" : "now")} permutes its inputs (act-order), unlike when the build was resolved. Rebuild to resolve again.",
                        where);
                if (q.Bits != model.SchemeOf(entry).Bits)
                    throw new LlmBuildException(ErrorCodes.PrecisionChoiceStale,
                        $"'{entry.SourceTensor}' was quantized to {q.Bits} bits but the build stores it with {model.SchemeOf(entry).Bits}. Build again.", where);
                NonFiniteCheck.Float32(q.Scales, entry.SourceTensor + " (scales)", [q.N, q.GroupsPerRow], 0, where);
                npz.AddUInt8(WeightKeys.QWeight(entry.Key), q.QWeight, [q.N, q.PackedRowBytes]);
                npz.AddFloat32(WeightKeys.Scales(entry.Key), q.Scales, [q.N, q.GroupsPerRow]);
                npz.AddUInt8(WeightKeys.QZeros(entry.Key), q.QZeros, [q.N, q.GroupsPerRow]);
                if (q.InputPermutation is not null)
                    npz.AddInt32(WeightKeys.InputPermutation(entry.Key), q.InputPermutation, [q.K]);
                break;
            case WeightStorage.Activation:
            case WeightStorage.Float32:
                // In the source's input order: the activation-dtype weight is used without a gather.
                WriteGiven(entry, LinearQuantizer.DequantizeInSourceOrder(q), model, npz, where);
                break;
        }
    }

    /// <summary>Stores float values given for the entry (activation dtype or f32, as the entry says; quantized entries are rounded to nearest).</summary>
    private static void WriteGiven(WeightEntry entry, float[] w, ResolvedModel model, NpzWriter npz, string where)
    {
        NonFiniteCheck.Float32(w, entry.SourceTensor, entry.Shape, 0, where);
        switch (entry.Storage)
        {
            case WeightStorage.Float32:
                npz.AddFloat32(entry.Key, w, entry.Shape);
                break;
            case WeightStorage.Activation:
                if (model.ActivationDtype == "f32")
                {
                    npz.AddFloat32(entry.Key, w, entry.Shape);
                    break;
                }
                ushort[] bits = new ushort[w.Length];
                if (model.ActivationDtype == "bf16")
                {
                    FloatFormats.FloatToBFloat16(w, bits);
                    npz.AddBFloat16(entry.Key, bits, entry.Shape);
                }
                else
                {
                    FloatFormats.FloatToHalf(w, bits);
                    npz.AddHalf(entry.Key, bits, entry.Shape);
                }
                break;
            case WeightStorage.Quantized:
                WriteGiven(entry, LinearQuantizer.Quantize(w, checked((int)entry.Shape[0]), checked((int)entry.Shape[1]), model.SchemeOf(entry), entry.SourceTensor), model, npz, where);
                break;
        }
    }
}
