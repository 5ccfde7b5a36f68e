using System.Buffers.Binary;
using LlmBuild.Core.BModel;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Models;

/// <summary>Where an operand lives. Offsets are relative to the region's base, which the runtime decides.</summary>
public enum Region : byte
{
    /// <summary>An absent optional operand (TPU-MLIR's top.None).</summary>
    None = 0,
    /// <summary>The net's neuron (ctx) memory: intermediates placed by the memory planner.</summary>
    Ctx = 1,
    /// <summary>The net's coefficient memory (weights), shared by nets with identical weights.</summary>
    Coeff = 2,
    /// <summary>The program's constant section (RoPE tables, masks), stored with the command stream.</summary>
    Const = 3,
    /// <summary>Net input number <see cref="TensorRef.Offset"/> (io_alone: the runtime binds it to any device memory).</summary>
    Input = 4,
    /// <summary>Net output number <see cref="TensorRef.Offset"/>.</summary>
    Output = 5,
}

/// <summary>The emulator's instruction set: one opcode per kernel. Operands and attributes per opcode are listed in <see cref="EmuInstr"/>.</summary>
public enum EmuOp : ushort
{
    /// <summary>out = in converted to out's dtype (same element count).</summary>
    Convert = 1,
    /// <summary>in: table, ids (i32 [n]). ints: outer, extent, inner (the table around the axis). out [outer, n, inner]:
    /// the table's rows (axis 0: outer 1) or an input's columns (last axis: inner 1) at the ids.</summary>
    Gather = 2,
    /// <summary>in: x, gamma [H]. floats: eps. Over the last dimension.</summary>
    RmsNorm = 3,
    /// <summary>in: x [M,K], w, bias|None. ints: M, K, N, rightTranspose (w is [N,K] when 1, else [K,N]).</summary>
    MatMul = 4,
    /// <summary>in: x [M,K], qweight [N,K·bits/8], scales f32 [N,G], qzeros u8 [N,G], bias|None. ints: M, K, N, bits, group.</summary>
    A16MatMul = 5,
    /// <summary>in: a, b. ints: mode, rank, outShape[rank], aStrides[rank], bStrides[rank] (element strides, 0 = broadcast).</summary>
    Binary = 6,
    /// <summary>in: x. floats: c. out = x·c.</summary>
    MulConst = 7,
    /// <summary>in: x. out = x·sigmoid(x).</summary>
    SiLU = 8,
    /// <summary>in: x. ints: rank, outShape[rank], inStrides[rank] (already multiplied by steps), start offset.</summary>
    Slice = 9,
    /// <summary>in: inputs. ints: outer, inner, then each input's extent along the axis.</summary>
    Concat = 10,
    /// <summary>in: q [B,Mq,Hq,D], k [B,Mk,Hkv,D], v, mask [B,1,Mq,Mk]|None. ints: B, Hq, Hkv, D, Mq, Mk, causal. floats: scale.</summary>
    Attention = 11,
    /// <summary>in: x [R, N], k (i32 [1])|None. out: values [R,K], indices [R,K]. ints: R, N, K. Largest first, ties by lower index.</summary>
    TopK = 12,
    /// <summary>in: x [R, N]. ints: R, N. Softmax over the last axis.</summary>
    Softmax = 13,
    /// <summary>in: x [R, N]. ints: R, N. Cumulative sum over the last axis.</summary>
    CumSum = 14,
    /// <summary>in: a, b (broadcast as Binary). ints as Binary; mode is a comparison. out 1/0.</summary>
    Compare = 15,
    /// <summary>in: x. ints: mode. floats: c. out = (x op c) ? 1 : 0.</summary>
    CompareConst = 16,
    /// <summary>in: cond, x, y|None (all same shape). floats: yConst (used when y is None).</summary>
    Where = 17,
    /// <summary>in: data [R,N], ids i32 [R,M]. ints: R, N, M. out[r,m] = data[r, ids[r,m]].</summary>
    GatherElements = 18,
    /// <summary>in: data [R,N], ids i32 [R,M], updates [R,M]. ints: R, N, M. out = data; out[r, ids[r,m]] = updates[r,m].</summary>
    ScatterElements = 19,
    /// <summary>in: data, indices (float) [n, rank], updates [n]. ints: rank, shape[rank]. out = data with the points set.</summary>
    ScatterND = 20,
    /// <summary>in: x. out = gelu(x) with the tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    GeluTanh = 21,
    /// <summary>in: x. out = tanh(x).</summary>
    Tanh = 22,
    /// <summary>in: x, gamma [H], beta [H]|None. floats: eps. (x − mean)/√(var + eps)·gamma + beta over the last dimension.</summary>
    LayerNorm = 23,
    /// <summary>in: x. out = gelu(x) with erf: ½x(1 + erf(x/√2)).</summary>
    GeluErf = 24,
}

/// <summary>Binary modes (also <see cref="EmuOp.Compare"/> modes, which continue the numbering).</summary>
public enum BinaryMode : long { Add = 0, Sub = 1, Mul = 2, Div = 3, Less = 10, Greater = 11, LessOrEqual = 12, GreaterOrEqual = 13, Equal = 14, NotEqual = 15 }

/// <summary>One operand: its region, offset inside it, element type and shape.</summary>
public readonly record struct TensorRef(Region Region, BModelDataType DType, long Offset, long[] Shape)
{
    public static readonly TensorRef None = new(Region.None, BModelDataType.Float32, 0, []);
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
    public long Bytes => Count * ElementSize(DType);
    public bool IsNone => Region == Region.None;

    public static int ElementSize(BModelDataType t) =>
        TryElementSize(t, out int size) ? size : throw new ArgumentOutOfRangeException(nameof(t), t, "no whole-byte element size");

    /// <summary>The element size of the types the emulator runs; false for any other (e.g. a damaged dtype field).</summary>
    public static bool TryElementSize(BModelDataType t, out int size)
    {
        size = t switch
        {
            BModelDataType.Float32 or BModelDataType.Int32 or BModelDataType.UInt32 => 4,
            BModelDataType.Float16 or BModelDataType.BFloat16 or BModelDataType.Int16 or BModelDataType.UInt16 => 2,
            BModelDataType.Int8 or BModelDataType.UInt8 => 1,
            _ => 0,
        };
        return size > 0;
    }

    public override string ToString() => $"{Region}+{Offset}:{BModelDataTypes.Name(DType)}[{string.Join(",", Shape)}]";
}

/// <summary>One instruction of the emulator program.</summary>
public sealed record EmuInstr(EmuOp Op, TensorRef[] Inputs, TensorRef[] Outputs, long[] Ints, float[] Floats, string Name)
{
    public override string ToString() => $"{Op} {Name}: ({string.Join(", ", Inputs)}) -> ({string.Join(", ", Outputs)}) [{string.Join(",", Ints)}] [{string.Join(",", Floats)}]";
}

/// <summary>
/// A named tensor the program leaves in ctx memory when it finishes (e.g. lm_head's logits before its TopK), for
/// verification and the logits command. Valid after a run only: the planner never reuses its bytes after it is defined.
/// </summary>
public sealed record EmuProbe(string Name, TensorRef Tensor);

/// <summary>
/// The command stream of a net for the LlmBuild emulator: a little-endian byte program stored as the stage's cmd group
/// (binary_bdc; the constant section is binary_gdma). Layout: magic "LLBE", u16 version, u32 instruction count,
/// u32 probe count; each instruction: u16 op, u8 inputs, u8 outputs, u16 ints, u16 floats, u16 name length, the name
/// (UTF-8), the tensor refs (u8 region, u8 dtype, i64 offset, u8 rank, i64 dims), i64 ints, f32 floats; each probe:
/// u16 name length, name, tensor ref.
/// </summary>
public sealed record EmuProgram(IReadOnlyList<EmuInstr> Instructions, IReadOnlyList<EmuProbe> Probes)
{
    public const uint Magic = 0x45424C4C; // "LLBE"
    public const ushort Version = 1;

    public byte[] Encode()
    {
        using var ms = new MemoryStream();
        using var w = new BinaryWriter(ms);
        w.Write(Magic);
        w.Write(Version);
        w.Write(Instructions.Count);
        w.Write(Probes.Count);
        foreach (var i in Instructions)
        {
            w.Write((ushort)i.Op);
            w.Write(checked((byte)i.Inputs.Length));
            w.Write(checked((byte)i.Outputs.Length));
            w.Write(checked((ushort)i.Ints.Length));
            w.Write(checked((ushort)i.Floats.Length));
            WriteName(w, i.Name);
            foreach (var t in i.Inputs) WriteRef(w, t);
            foreach (var t in i.Outputs) WriteRef(w, t);
            foreach (long v in i.Ints) w.Write(v);
            foreach (float v in i.Floats) w.Write(v);
        }
        foreach (var p in Probes)
        {
            WriteName(w, p.Name);
            WriteRef(w, p.Tensor);
        }
        w.Flush();
        return ms.ToArray();
    }

    public static EmuProgram Decode(ReadOnlySpan<byte> bytes, string where)
    {
        var r = new SpanReader(bytes, where);
        if (r.U32() != Magic) throw Bad(where, "it has no LlmBuild emulator program (wrong magic)");
        ushort version = r.U16();
        if (version != Version) throw Bad(where, $"its program has version {version}, this LlmBuild reads version {Version}; rebuild the model");
        int count = r.I32(), probes = r.I32();
        if (count < 0 || probes < 0) throw Bad(where, "negative instruction count");
        // Counts come from the file: size the lists by what the bytes can hold, never by a damaged count.
        var list = new List<EmuInstr>(Math.Min(count, bytes.Length / 8));
        for (int n = 0; n < count; n++)
        {
            ushort op = r.U16();
            if (!Enum.IsDefined((EmuOp)op)) throw Bad(where, $"instruction {n} has unknown opcode {op}");
            int nIn = r.U8(), nOut = r.U8(), nInt = r.U16(), nFloat = r.U16();
            string name = r.Name();
            var inputs = new TensorRef[nIn];
            for (int i = 0; i < nIn; i++) inputs[i] = r.Ref();
            var outputs = new TensorRef[nOut];
            for (int i = 0; i < nOut; i++) outputs[i] = r.Ref();
            var ints = new long[nInt];
            for (int i = 0; i < nInt; i++) ints[i] = r.I64();
            var floats = new float[nFloat];
            for (int i = 0; i < nFloat; i++) floats[i] = r.F32();
            list.Add(new EmuInstr((EmuOp)op, inputs, outputs, ints, floats, name));
        }
        var probeList = new List<EmuProbe>(Math.Min(probes, bytes.Length / 8));
        for (int n = 0; n < probes; n++) probeList.Add(new EmuProbe(r.Name(), r.Ref()));
        if (!r.AtEnd) throw Bad(where, "trailing bytes after the program");
        return new EmuProgram(list, probeList);
    }

    private static LlmBuildException Bad(string where, string what) =>
        new(ErrorCodes.NotEmulatorModel, $"{where}: {what}. Build the model with LlmBuild's built-in backend to run it in the emulator.");

    private static void WriteName(BinaryWriter w, string name)
    {
        byte[] b = System.Text.Encoding.UTF8.GetBytes(name);
        w.Write(checked((ushort)b.Length));
        w.Write(b);
    }

    private static void WriteRef(BinaryWriter w, TensorRef t)
    {
        w.Write((byte)t.Region);
        w.Write((byte)t.DType);
        w.Write(t.Offset);
        w.Write(checked((byte)t.Shape.Length));
        foreach (long d in t.Shape) w.Write(d);
    }

    private ref struct SpanReader(ReadOnlySpan<byte> data, string where)
    {
        private readonly ReadOnlySpan<byte> _data = data;
        private int _pos;

        public readonly bool AtEnd => _pos == _data.Length;

        private ReadOnlySpan<byte> Take(int n)
        {
            if (n < 0 || _pos + n > _data.Length) throw Bad(where, "the program is truncated");
            var s = _data.Slice(_pos, n);
            _pos += n;
            return s;
        }

        public byte U8() => Take(1)[0];
        public ushort U16() => BinaryPrimitives.ReadUInt16LittleEndian(Take(2));
        public uint U32() => BinaryPrimitives.ReadUInt32LittleEndian(Take(4));
        public int I32() => BinaryPrimitives.ReadInt32LittleEndian(Take(4));
        public long I64() => BinaryPrimitives.ReadInt64LittleEndian(Take(8));
        public float F32() => BinaryPrimitives.ReadSingleLittleEndian(Take(4));
        public string Name() => System.Text.Encoding.UTF8.GetString(Take(U16()));

        public TensorRef Ref()
        {
            byte region = U8();
            if (region > (byte)Region.Output) throw Bad(where, $"unknown region {region}");
            var dtype = (BModelDataType)U8();
            if (region != (byte)Region.None && !TensorRef.TryElementSize(dtype, out _)) throw Bad(where, $"an operand has element type {(int)dtype}, which has no whole-byte size");
            long offset = I64();
            int rank = U8();
            var shape = new long[rank];
            long bytes = region == (byte)Region.None ? 0 : TensorRef.ElementSize(dtype);
            for (int i = 0; i < rank; i++)
            {
                shape[i] = I64();
                if (shape[i] < 0) throw Bad(where, "negative dimension");
                // Operand sizes are multiplied everywhere the program runs: one that overflows is a damaged program.
                try { bytes = checked(bytes * shape[i]); }
                catch (OverflowException) { throw Bad(where, $"an operand's shape [{string.Join(",", shape[..(i + 1)])}…] is larger than any memory"); }
            }
            return new TensorRef((Region)region, dtype, offset, shape);
        }
    }
}
