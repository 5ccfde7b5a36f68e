using System.Buffers.Binary;
using System.Diagnostics;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Runtime;

namespace LlmBuild.Core.Tests.Hardening;

/// <summary>
/// Fuzzes the bmodel loader the run, logits and serve paths use (LlmEmulator.Load: reader, tensor checks, check codes,
/// device memory, net contract) with a few thousand mutations of a small built model: every case ends in success or a
/// coded LlmBuildException, each within a time and memory bound.
/// </summary>
[TestClass]
public sealed class BModelLoaderFuzzTests
{
    private const int Cases = 2000;
    private static readonly TimeSpan CaseLimit = TimeSpan.FromSeconds(2);
    /// <summary>Emulated device memory a loaded mutant may reserve (the intact model reserves a few MiB).</summary>
    private const long DeviceMemoryLimit = 256L << 20;

    private static readonly ulong[] Boundary =
    [
        0, 1, 2, 3, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 1UL << 32, 1UL << 40, (ulong)long.MaxValue, 1UL << 63,
        unchecked((ulong)-5L), ulong.MaxValue,
    ];

    [TestMethod]
    public void MutatedBModelsLoadOrGiveCodedErrors()
    {
        var small = SmallBuiltModel.Get();
        byte[] original = File.ReadAllBytes(small.BModel);
        int fbEnd = 64 + (int)BinaryPrimitives.ReadUInt32LittleEndian(original.AsSpan(8));
        string path = Path.Combine(Path.GetTempPath(), $"fuzz-{Guid.NewGuid():N}.bmodel");
        var rng = new Random(19);
        var codes = new SortedDictionary<string, int>(StringComparer.Ordinal);
        int loaded = 0;
        TimeSpan slowest = TimeSpan.Zero;
        long largestDeviceMemory = 0;
        var total = Stopwatch.StartNew();
        for (int i = 0; i < Cases; i++)
        {
            byte[] data = Mutate(original, fbEnd, rng, i % 4);
            File.WriteAllBytes(path, data);
            var watch = Stopwatch.StartNew();
            long reserved = 0;
            try
            {
                using var emu = LlmEmulator.Load(path, small.ConfigDir);
                loaded++;
                reserved = emu.Runtime.Memory.Capacity;
            }
            catch (LlmBuildException e)
            {
                codes[e.Code] = codes.GetValueOrDefault(e.Code) + 1;
            }
            catch (Exception e)
            {
                Assert.Fail($"case {i} (strategy {i % 4}): {e.GetType().Name} is not a coded error: {e}");
            }
            watch.Stop();
            if (watch.Elapsed > slowest) slowest = watch.Elapsed;
            largestDeviceMemory = Math.Max(largestDeviceMemory, reserved);
            Assert.IsTrue(watch.Elapsed < CaseLimit, $"case {i} took {watch.Elapsed.TotalSeconds:0.00} s");
            Assert.IsTrue(reserved < DeviceMemoryLimit, $"case {i} reserved {reserved >> 20} MiB of device memory");
        }
        Console.WriteLine($"{Cases} mutations in {total.Elapsed.TotalSeconds:0.0} s: {loaded} loaded, " +
            string.Join(", ", codes.Select(c => $"{c.Key} ×{c.Value}")) + $"; slowest case {slowest.TotalMilliseconds:0} ms, largest device memory reserved {largestDeviceMemory >> 20} MiB");
        Assert.IsTrue(codes.Values.Sum() > Cases / 2, "most mutations are detected");
        Assert.IsTrue(codes.ContainsKey(ErrorCodes.BModelBadTensor), "shape and size fields were hit");
        Assert.IsTrue(codes.ContainsKey(ErrorCodes.BModelCheckCodeMismatch), "weight bytes were hit");
    }

    private static byte[] Mutate(byte[] original, int fbEnd, Random rng, int strategy)
    {
        byte[] data = (byte[])original.Clone();
        switch (strategy)
        {
            case 0: // an 8-aligned u64 of the flatbuffer — shape dims, sizes, addresses — set to a boundary or nearby value
            {
                int at = 64 + 8 * rng.Next((fbEnd - 64) / 8);
                ulong old = BinaryPrimitives.ReadUInt64LittleEndian(data.AsSpan(at));
                BinaryPrimitives.WriteUInt64LittleEndian(data.AsSpan(at), rng.Next(2) == 0 ? Boundary[rng.Next(Boundary.Length)] : old + (ulong)rng.Next(-64, 65));
                return data;
            }
            case 1: // a 4-aligned u32 of the flatbuffer — offsets, lengths, counts, dtypes
            {
                int at = 64 + 4 * rng.Next((fbEnd - 64) / 4);
                BinaryPrimitives.WriteUInt32LittleEndian(data.AsSpan(at), (uint)Boundary[rng.Next(Boundary.Length)]);
                return data;
            }
            case 2: // bit flips in the header and flatbuffer
                for (int k = 1 + rng.Next(6); k > 0; k--) data[rng.Next(fbEnd)] ^= (byte)(1 << rng.Next(8));
                return data;
            default: // bytes of the blob after the flatbuffer: weights, programs, constants
                for (int k = 1 + rng.Next(50); k > 0; k--) data[fbEnd + rng.Next(data.Length - fbEnd)] ^= (byte)(1 + rng.Next(255));
                return data;
        }
    }
}
