using System.Buffers.Binary;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>One entry of a zip's central directory, with the offset of its data resolved from its local header.</summary>
public sealed record ZipEntry(string Name, int Method, uint Crc32, long CompressedSize, long Size, long DataOffset);

/// <summary>
/// Reads a zip file's central directory (zip64 included), bounds-checking every offset. The file is read through a
/// positional-read callback, so torch .bin checkpoints (memory-mapped) and npz files (handles) share one parser;
/// each caller supplies its own coded error.
/// </summary>
public static class ZipDirectory
{
    /// <param name="length">The file's length in bytes.</param>
    /// <param name="read">Fills the span with the bytes at the offset (the offset is already bounds-checked).</param>
    /// <param name="bad">Makes the caller's coded error from a description of what is wrong.</param>
    public static List<ZipEntry> Read(long length, Action<long, Span<byte>> read, Func<string, LlmBuildException> bad)
    {
        int tailLength = (int)Math.Min(length, 22 + 65535);
        if (tailLength < 22) throw bad("it is too short to be a zip file");
        byte[] tail = new byte[tailLength];
        read(length - tailLength, tail);
        int eocd = -1;
        for (int i = tailLength - 22; i >= 0; i--)
            if (BinaryPrimitives.ReadUInt32LittleEndian(tail.AsSpan(i)) == 0x06054b50) { eocd = i; break; }
        if (eocd < 0) throw bad("no zip end-of-central-directory record was found");
        var end = tail.AsSpan(eocd);
        long count = BinaryPrimitives.ReadUInt16LittleEndian(end[10..]);
        long cdSize = BinaryPrimitives.ReadUInt32LittleEndian(end[12..]);
        long cdOffset = BinaryPrimitives.ReadUInt32LittleEndian(end[16..]);
        long eocdPosition = length - tailLength + eocd;
        if (count == ushort.MaxValue || cdSize == uint.MaxValue || cdOffset == uint.MaxValue)
        {
            if (eocdPosition < 20) throw bad("the zip64 locator is missing");
            byte[] locator = new byte[20];
            read(eocdPosition - 20, locator);
            if (BinaryPrimitives.ReadUInt32LittleEndian(locator) != 0x07064b50) throw bad("the zip64 locator is missing");
            long at = BinaryPrimitives.ReadInt64LittleEndian(locator.AsSpan(8));
            if (at < 0 || at + 56 > length) throw bad("the zip64 end record lies outside the file");
            byte[] record = new byte[56];
            read(at, record);
            if (BinaryPrimitives.ReadUInt32LittleEndian(record) != 0x06064b50) throw bad("the zip64 end record is missing");
            count = BinaryPrimitives.ReadInt64LittleEndian(record.AsSpan(32));
            cdSize = BinaryPrimitives.ReadInt64LittleEndian(record.AsSpan(40));
            cdOffset = BinaryPrimitives.ReadInt64LittleEndian(record.AsSpan(48));
        }
        if (cdOffset < 0 || cdSize < 0 || cdSize > int.MaxValue || cdOffset + cdSize > length) throw bad("the central directory lies outside the file");
        byte[] cd = new byte[cdSize];
        read(cdOffset, cd);
        var entries = new List<ZipEntry>();
        int p = 0;
        byte[] local = new byte[30];
        for (long i = 0; i < count; i++)
        {
            if (p + 46 > cd.Length || BinaryPrimitives.ReadUInt32LittleEndian(cd.AsSpan(p)) != 0x02014b50) throw bad("the central directory is corrupt");
            var h = cd.AsSpan(p);
            int method = BinaryPrimitives.ReadUInt16LittleEndian(h[10..]);
            uint crc = BinaryPrimitives.ReadUInt32LittleEndian(h[16..]);
            long compressed = BinaryPrimitives.ReadUInt32LittleEndian(h[20..]);
            long size = BinaryPrimitives.ReadUInt32LittleEndian(h[24..]);
            int nameLength = BinaryPrimitives.ReadUInt16LittleEndian(h[28..]);
            int extraLength = BinaryPrimitives.ReadUInt16LittleEndian(h[30..]);
            int commentLength = BinaryPrimitives.ReadUInt16LittleEndian(h[32..]);
            long localOffset = BinaryPrimitives.ReadUInt32LittleEndian(h[42..]);
            if (p + 46 + nameLength + extraLength + commentLength > cd.Length) throw bad("the central directory is corrupt");
            string name = Encoding.UTF8.GetString(h.Slice(46, nameLength));
            var extra = h.Slice(46 + nameLength, extraLength);
            while (extra.Length >= 4)
            {
                int tag = BinaryPrimitives.ReadUInt16LittleEndian(extra), len = BinaryPrimitives.ReadUInt16LittleEndian(extra[2..]);
                if (4 + len > extra.Length) break;
                if (tag == 1)
                {
                    // zip64 extra field: the 64-bit values of the fields whose 32-bit slots are saturated, in this order.
                    var z = extra.Slice(4, len);
                    if (size == uint.MaxValue && z.Length >= 8) { size = BinaryPrimitives.ReadInt64LittleEndian(z); z = z[8..]; }
                    if (compressed == uint.MaxValue && z.Length >= 8) { compressed = BinaryPrimitives.ReadInt64LittleEndian(z); z = z[8..]; }
                    if (localOffset == uint.MaxValue && z.Length >= 8) localOffset = BinaryPrimitives.ReadInt64LittleEndian(z);
                }
                extra = extra[(4 + len)..];
            }
            p += 46 + nameLength + extraLength + commentLength;
            if (localOffset < 0 || localOffset + 30 > length) throw bad($"entry '{name}' starts outside the file");
            read(localOffset, local);
            if (BinaryPrimitives.ReadUInt32LittleEndian(local) != 0x04034b50) throw bad($"the local header of entry '{name}' is corrupt");
            long dataOffset = localOffset + 30 + BinaryPrimitives.ReadUInt16LittleEndian(local.AsSpan(26)) + BinaryPrimitives.ReadUInt16LittleEndian(local.AsSpan(28));
            if (compressed < 0 || dataOffset + compressed > length) throw bad($"entry '{name}' runs past the end of the file; it is truncated");
            entries.Add(new ZipEntry(name, method, crc, compressed, size, dataOffset));
        }
        return entries;
    }
}
