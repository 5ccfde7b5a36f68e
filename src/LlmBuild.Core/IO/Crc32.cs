using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace LlmBuild.Core.IO;

/// <summary>
/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320) as zip uses it. Large inputs fold 64 bytes at a time with
/// carry-less multiplication (PCLMULQDQ, the folding method of Intel's white paper "Fast CRC Computation for Generic
/// Polynomials Using PCLMULQDQ"), then a Barrett reduction; the rest uses slice-by-8 tables.
/// </summary>
public static class Crc32
{
    // Folding constants for the reflected polynomial: x^(4·128±32) mod P, x^(128±32) mod P, x^64 mod P, and P' / μ.
    private const ulong K1 = 0x0154442bd4, K2 = 0x01c6e41596, K3 = 0x01751997d0, K4 = 0x00ccaa009e, K5 = 0x0163cd6124;
    private const ulong Poly = 0x01db710641, Mu = 0x01f7011641;

    private static readonly uint[] Table = BuildTable();

    private static uint[] BuildTable()
    {
        var t = new uint[8 * 256];
        for (uint i = 0; i < 256; i++)
        {
            uint c = i;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
            t[i] = c;
        }
        for (int s = 1; s < 8; s++)
            for (int i = 0; i < 256; i++)
                t[s * 256 + i] = (t[(s - 1) * 256 + i] >> 8) ^ t[t[(s - 1) * 256 + i] & 0xFF];
        return t;
    }

    /// <summary>The CRC of <paramref name="data"/>, continuing from a previous CRC (0 to start).</summary>
    public static uint Append(uint crc, ReadOnlySpan<byte> data)
    {
        uint c = ~crc;
        if (Pclmulqdq.IsSupported && Sse41.IsSupported && data.Length >= 128)
        {
            int folded = data.Length & ~15;
            c = Fold(data[..folded], c);
            data = data[folded..];
        }
        return ~Tables(c, data);
    }

    private static uint Tables(uint c, ReadOnlySpan<byte> data)
    {
        uint[] t = Table;
        int i = 0;
        for (; i <= data.Length - 8; i += 8)
        {
            uint lo = c ^ System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(i));
            uint hi = System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(data.Slice(i + 4));
            c = t[7 * 256 + (lo & 0xFF)] ^ t[6 * 256 + ((lo >> 8) & 0xFF)] ^ t[5 * 256 + ((lo >> 16) & 0xFF)] ^ t[4 * 256 + (lo >> 24)]
              ^ t[3 * 256 + (hi & 0xFF)] ^ t[2 * 256 + ((hi >> 8) & 0xFF)] ^ t[256 + ((hi >> 16) & 0xFF)] ^ t[hi >> 24];
        }
        for (; i < data.Length; i++) c = t[(c ^ data[i]) & 0xFF] ^ (c >> 8);
        return c;
    }

    /// <summary>CRC state after <paramref name="data"/> (length ≥ 64, a multiple of 16), state in and out un-inverted.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static uint Fold(ReadOnlySpan<byte> data, uint c)
    {
        static Vector128<ulong> LoadAt(ReadOnlySpan<byte> d, int offset) => Vector128.LoadUnsafe(ref MemoryMarshal.GetReference(d), (nuint)offset).AsUInt64();
        static Vector128<ulong> Step(Vector128<ulong> x, Vector128<ulong> k) =>
            Pclmulqdq.CarrylessMultiply(x, k, 0x00) ^ Pclmulqdq.CarrylessMultiply(x, k, 0x11);

        var x1 = LoadAt(data, 0) ^ Vector128.CreateScalar(c).AsUInt64();
        var x2 = LoadAt(data, 16);
        var x3 = LoadAt(data, 32);
        var x4 = LoadAt(data, 48);
        var k12 = Vector128.Create(K1, K2);
        int at = 64;
        for (; at + 64 <= data.Length; at += 64)
        {
            x1 = Step(x1, k12) ^ LoadAt(data, at);
            x2 = Step(x2, k12) ^ LoadAt(data, at + 16);
            x3 = Step(x3, k12) ^ LoadAt(data, at + 32);
            x4 = Step(x4, k12) ^ LoadAt(data, at + 48);
        }
        var k34 = Vector128.Create(K3, K4);
        x1 = Step(x1, k34) ^ x2;
        x1 = Step(x1, k34) ^ x3;
        x1 = Step(x1, k34) ^ x4;
        for (; at + 16 <= data.Length; at += 16) x1 = Step(x1, k34) ^ LoadAt(data, at);

        // 128 → 64 bits.
        var mask32 = Vector128.Create(~0u, 0, ~0u, 0).AsUInt64();
        var t = Pclmulqdq.CarrylessMultiply(x1, k34, 0x10);
        x1 = Sse2.ShiftRightLogical128BitLane(x1, 8) ^ t;
        var k5 = Vector128.Create(K5, 0UL);
        t = Sse2.ShiftRightLogical128BitLane(x1, 4);
        x1 = Pclmulqdq.CarrylessMultiply(x1 & mask32, k5, 0x00) ^ t;
        // Barrett reduction to 32 bits.
        var poly = Vector128.Create(Poly, Mu);
        t = Pclmulqdq.CarrylessMultiply(x1 & mask32, poly, 0x10);
        t = Pclmulqdq.CarrylessMultiply(t & mask32, poly, 0x00);
        return Sse41.Extract((x1 ^ t).AsUInt32(), 1);
    }

    public static uint Compute(ReadOnlySpan<byte> data) => Append(0, data);

    /// <summary>Bit-at-a-time reference, straight from the polynomial (for tests).</summary>
    public static uint ComputeReference(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }
}
