using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.IO;

/// <summary>
/// A POSIX.1-2001 (ustar + pax) tar writer: regular files only, deterministic (mtime 0, uid/gid 0, mode 0644, owner
/// names empty), 512-byte blocks, two zero blocks at the end, the archive padded to whole 10240-byte records. A member
/// larger than the ustar size field holds (8 GiB − 1) gets a pax extended header ('x') carrying its size, as POSIX
/// specifies; names are plain file names of at most 100 bytes of ASCII (the members this project writes).
/// </summary>
public sealed class TarWriter
{
    public const int BlockSize = 512, RecordSize = 20 * BlockSize;
    private const long UstarMaxSize = 0x1_FFFF_FFFFL; // 11 octal digits
    private readonly Stream _out;
    private readonly long _paxAbove;
    private long _written;

    /// <param name="paxAbove">Members larger than this carry their size in a pax header (default: what ustar cannot hold; tests lower it).</param>
    public TarWriter(Stream output, long paxAbove = UstarMaxSize)
    {
        _out = output;
        _paxAbove = Math.Min(paxAbove, UstarMaxSize);
    }

    /// <summary>Adds a regular file of <paramref name="size"/> bytes whose content <paramref name="copy"/> writes.</summary>
    public void Add(string name, long size, Action<Stream> copy)
    {
        CheckName(name);
        ArgumentOutOfRangeException.ThrowIfNegative(size);
        bool pax = size > _paxAbove;
        if (pax)
        {
            byte[] record = PaxRecord("size", size.ToString(CultureInfo.InvariantCulture));
            WriteHeader(Truncate("PaxHeaders/" + name), record.Length, (byte)'x');
            Write(record);
            Pad(record.Length);
        }
        WriteHeader(name, Math.Min(size, UstarMaxSize), (byte)'0', pax);
        var counting = new CountingStream(_out);
        copy(counting);
        if (counting.Count != size)
            throw new InvalidOperationException($"Tar member '{name}' was declared {size} bytes but {counting.Count} were written.");
        _written += size;
        Pad(size);
    }

    public void Add(string name, ReadOnlyMemory<byte> content) => Add(name, content.Length, s => s.Write(content.Span));

    /// <summary>Two zero blocks, then zeros up to a whole record.</summary>
    public void Finish()
    {
        Write(new byte[2 * BlockSize]);
        long rest = _written % RecordSize;
        if (rest != 0) Write(new byte[RecordSize - rest]);
    }

    private void WriteHeader(string name, long size, byte type, bool sizeInPax = false)
    {
        var h = new byte[BlockSize];
        Ascii(h, 0, 100, name);
        Octal(h, 100, 8, 0b110_100_100);            // mode 0644
        Octal(h, 108, 8, 0);                        // uid
        Octal(h, 116, 8, 0);                        // gid
        Octal(h, 124, 12, sizeInPax ? 0 : size);    // size (the pax record holds it when larger)
        Octal(h, 136, 12, 0);                       // mtime: none, so archives are reproducible
        h[156] = type;
        Ascii(h, 257, 6, "ustar");                  // magic "ustar\0"
        h[263] = (byte)'0'; h[264] = (byte)'0';     // version "00"
        for (int i = 148; i < 156; i++) h[i] = (byte)' ';
        int sum = 0;
        foreach (byte b in h) sum += b;
        Octal(h, 148, 7, sum);                      // six digits and a NUL, then the space already there
        Write(h);
    }

    /// <summary>A pax record "LEN key=value\n" whose LEN counts itself.</summary>
    private static byte[] PaxRecord(string key, string value)
    {
        int body = Encoding.UTF8.GetByteCount($" {key}={value}\n");
        int length = body + 1;
        while (length.ToString(CultureInfo.InvariantCulture).Length + body != length) length++;
        return Encoding.UTF8.GetBytes($"{length.ToString(CultureInfo.InvariantCulture)} {key}={value}\n");
    }

    private static string Truncate(string name) => name.Length <= 100 ? name : name[..100];

    private static void CheckName(string name)
    {
        if (name.Length == 0 || name.Length > 100 || name.Any(c => c < 0x20 || c > 0x7e) || name.Contains('/') || name is "." or "..")
            throw new ArgumentException($"Tar member name '{name}' must be a plain ASCII file name of 1..100 characters.", nameof(name));
    }

    private static void Ascii(byte[] h, int at, int width, string text)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(text);
        if (bytes.Length > width) throw new ArgumentException($"'{text}' does not fit {width} bytes.");
        bytes.CopyTo(h, at);
    }

    /// <summary>Zero-padded octal in width − 1 digits and a NUL.</summary>
    private static void Octal(byte[] h, int at, int width, long value)
    {
        string digits = Convert.ToString(value, 8).PadLeft(width - 1, '0');
        if (digits.Length > width - 1) throw new ArgumentOutOfRangeException(nameof(value), value, $"does not fit {width - 1} octal digits");
        Ascii(h, at, width - 1, digits);
        h[at + width - 1] = 0;
    }

    private void Pad(long size)
    {
        long rest = size % BlockSize;
        if (rest != 0) Write(new byte[BlockSize - rest]);
    }

    private void Write(ReadOnlySpan<byte> bytes)
    {
        _out.Write(bytes);
        _written += bytes.Length;
    }

    /// <summary>Passes writes through, counting them; nothing else is allowed.</summary>
    private sealed class CountingStream(Stream inner) : Stream
    {
        public long Count { get; private set; }
        public override void Write(byte[] buffer, int offset, int count) { inner.Write(buffer, offset, count); Count += count; }
        public override void Write(ReadOnlySpan<byte> buffer) { inner.Write(buffer); Count += buffer.Length; }
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => Count; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
    }
}

/// <summary>One member of a tar archive: its name, and where its content lies in the file.</summary>
public sealed record TarMember(string Name, long Offset, long Size);

/// <summary>
/// Lists the regular-file members of a tar archive (ustar, with pax size records), checking every header's checksum
/// and every member's extent against the file; anything else is <see cref="ErrorCodes.BadPipelinePackage"/>.
/// </summary>
public static class TarReader
{
    public static IReadOnlyList<TarMember> List(string path)
    {
        using var file = File.OpenRead(path);
        long length = file.Length, at = 0;
        var members = new List<TarMember>();
        var header = new byte[TarWriter.BlockSize];
        long? paxSize = null;
        while (true)
        {
            if (at + TarWriter.BlockSize > length) throw Bad(path, $"the archive ends inside a header at byte {at} (no end-of-archive blocks)");
            file.Position = at;
            file.ReadExactly(header);
            if (header.All(b => b == 0)) break;
            long stored = ParseOctal(header, 148, 8, path, "checksum");
            for (int i = 148; i < 156; i++) header[i] = (byte)' ';
            if (header.Sum(b => (long)b) != stored) throw Bad(path, $"the header at byte {at} fails its checksum");
            string name = Encoding.ASCII.GetString(header, 0, 100).TrimEnd('\0');
            long size = paxSize ?? ParseOctal(header, 124, 12, path, "size");
            byte type = header[156];
            long data = at + TarWriter.BlockSize;
            if (size < 0 || data + size > length) throw Bad(path, $"member '{name}' ({size} bytes at byte {data}) runs past the end of the file");
            paxSize = null;
            if (type == (byte)'x') paxSize = ReadPaxSize(file, data, size, path);
            else if (type is (byte)'0' or 0) members.Add(new TarMember(name, data, size));
            else throw Bad(path, $"member '{name}' has type '{(char)type}'; only regular files are expected");
            at = data + (size + TarWriter.BlockSize - 1) / TarWriter.BlockSize * TarWriter.BlockSize;
        }
        return members;
    }

    private static long? ReadPaxSize(FileStream file, long at, long size, string path)
    {
        if (size > 64 * 1024) throw Bad(path, "a pax header is larger than 64 KiB");
        var bytes = new byte[size];
        file.Position = at;
        file.ReadExactly(bytes);
        foreach (string record in Encoding.UTF8.GetString(bytes).Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            int space = record.IndexOf(' '), eq = record.IndexOf('=');
            if (space < 0 || eq < space) throw Bad(path, $"malformed pax record '{record}'");
            if (record[(space + 1)..eq] == "size")
                return long.TryParse(record[(eq + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out long v) ? v : throw Bad(path, $"bad pax size '{record}'");
        }
        return null;
    }

    private static long ParseOctal(byte[] h, int at, int width, string path, string field)
    {
        string text = Encoding.ASCII.GetString(h, at, width).Trim('\0', ' ');
        try { return text.Length == 0 ? 0 : Convert.ToInt64(text, 8); }
        catch (FormatException) { throw Bad(path, $"the {field} field '{text}' is not octal"); }
        catch (OverflowException) { throw Bad(path, $"the {field} field '{text}' is out of range"); }
    }

    private static LlmBuildException Bad(string path, string what) =>
        new(ErrorCodes.BadPipelinePackage, $"'{path}' is not a valid tar archive: {what}. Rebuild the pipeline package.", path);
}
