using System.Buffers.Binary;
using System.Text;

namespace LlmBuild.Core.FlatBuffers;

/// <summary>Thrown by <see cref="FlatBufferReader"/> when the buffer is malformed; callers turn it into a coded error
/// that names the file.</summary>
public sealed class FlatBufferFormatException(string message) : Exception(message);

/// <summary>
/// A bounds-checked FlatBuffers reader. Every uoffset, soffset, vtable, vector length and string terminator is
/// checked against the buffer before it is used, so a truncated or corrupted buffer raises
/// <see cref="FlatBufferFormatException"/> and never reads out of range. A budget on the number of tables and vector
/// elements decoded stops a crafted buffer whose offsets share objects from expanding into an enormous object graph.
/// </summary>
public sealed class FlatBufferReader
{
    private readonly byte[] _buf;
    private long _tableBudget;
    private long _elementBudget;

    public FlatBufferReader(byte[] buffer)
    {
        _buf = buffer;
        // A well-formed buffer without shared objects holds at most one table per 4 bytes and one element per byte.
        _tableBudget = buffer.Length / 4 + 16;
        _elementBudget = buffer.Length + 16;
    }

    public int Length => _buf.Length;

    public FbTable Root()
    {
        if (_buf.Length < 8) throw new FlatBufferFormatException($"the buffer is {_buf.Length} bytes, too short for a root table");
        return TableAt(Deref(0, "root"), "root");
    }

    internal uint U32(long pos) => BinaryPrimitives.ReadUInt32LittleEndian(_buf.AsSpan((int)pos, 4));
    internal ushort U16(long pos) => BinaryPrimitives.ReadUInt16LittleEndian(_buf.AsSpan((int)pos, 2));
    internal ReadOnlySpan<byte> Bytes(long pos, int length) => _buf.AsSpan((int)pos, length);

    private void Need(long pos, long size, string what)
    {
        if (pos < 0 || size < 0 || pos + size > _buf.Length)
            throw new FlatBufferFormatException($"{what} at byte {pos} (+{size}) lies outside the {_buf.Length}-byte buffer");
    }

    /// <summary>Follows the uoffset stored at <paramref name="pos"/>.</summary>
    internal long Deref(long pos, string what)
    {
        Need(pos, 4, what);
        long target = pos + U32(pos);
        if ((target & 3) != 0) throw new FlatBufferFormatException($"{what}: offset at byte {pos} points to unaligned byte {target}");
        Need(target, 4, what);
        return target;
    }

    internal FbTable TableAt(long pos, string what)
    {
        if (--_tableBudget < 0) throw new FlatBufferFormatException($"{what}: more tables than the buffer can hold (shared or cyclic offsets)");
        Need(pos, 4, what);
        long vt = pos - BinaryPrimitives.ReadInt32LittleEndian(_buf.AsSpan((int)pos, 4));
        if ((vt & 1) != 0) throw new FlatBufferFormatException($"{what}: table at byte {pos} has an unaligned vtable at {vt}");
        Need(vt, 4, $"{what} vtable");
        int vtSize = U16(vt);
        int tableSize = U16(vt + 2);
        if (vtSize < 4 || (vtSize & 1) != 0) throw new FlatBufferFormatException($"{what}: vtable at byte {vt} has invalid size {vtSize}");
        Need(vt, vtSize, $"{what} vtable");
        if (tableSize < 4) throw new FlatBufferFormatException($"{what}: table at byte {pos} has invalid size {tableSize}");
        Need(pos, tableSize, what);
        return new FbTable(this, pos, vt, vtSize, tableSize, what);
    }

    internal FbVector VectorAt(long pos, int elementSize, string what)
    {
        long count = U32(pos);
        if (elementSize > 0 && count > (_buf.Length - pos - 4) / elementSize)
            throw new FlatBufferFormatException($"{what}: vector at byte {pos} claims {count} elements of {elementSize} bytes, more than the buffer holds");
        _elementBudget -= count;
        if (_elementBudget < 0) throw new FlatBufferFormatException($"{what}: more vector elements than the buffer can hold (shared offsets)");
        return new FbVector(this, pos + 4, (int)count, elementSize, what);
    }

    internal string StringAt(long pos, string what)
    {
        long length = U32(pos);
        if (length >= _buf.Length - pos - 4) throw new FlatBufferFormatException($"{what}: string at byte {pos} claims {length} bytes, more than the buffer holds");
        if (_buf[pos + 4 + length] != 0) throw new FlatBufferFormatException($"{what}: string at byte {pos} is not zero-terminated");
        return Encoding.UTF8.GetString(_buf, (int)pos + 4, (int)length);
    }
}

/// <summary>A table inside a <see cref="FlatBufferReader"/>; field accessors take the field id (the schema's <c>id</c>).</summary>
public readonly struct FbTable
{
    private readonly FlatBufferReader _r;
    private readonly long _pos, _vt;
    private readonly int _vtSize, _tableSize;
    private readonly string _what;

    internal FbTable(FlatBufferReader r, long pos, long vt, int vtSize, int tableSize, string what)
    {
        _r = r; _pos = pos; _vt = vt; _vtSize = vtSize; _tableSize = tableSize; _what = what;
    }

    public string Name => _what;

    /// <summary>The absolute position of field <paramref name="id"/>, or -1 when absent.</summary>
    private long Field(int id, int size)
    {
        int entry = 4 + 2 * id;
        if (entry + 2 > _vtSize) return -1;
        int fo = _r.U16(_vt + entry);
        if (fo == 0) return -1;
        if (fo < 4 || fo + size > _tableSize)
            throw new FlatBufferFormatException($"{_what}: field {id} at table offset {fo} (+{size}) lies outside the {_tableSize}-byte table");
        return _pos + fo;
    }

    public bool Has(int id) => Field(id, 0) >= 0;

    public byte GetUInt8(int id, byte def = 0) { long p = Field(id, 1); return p < 0 ? def : _r.Bytes(p, 1)[0]; }
    public int GetInt32(int id, int def = 0) { long p = Field(id, 4); return p < 0 ? def : BinaryPrimitives.ReadInt32LittleEndian(_r.Bytes(p, 4)); }
    public uint GetUInt32(int id, uint def = 0) { long p = Field(id, 4); return p < 0 ? def : BinaryPrimitives.ReadUInt32LittleEndian(_r.Bytes(p, 4)); }
    public long GetInt64(int id, long def = 0) { long p = Field(id, 8); return p < 0 ? def : BinaryPrimitives.ReadInt64LittleEndian(_r.Bytes(p, 8)); }
    public ulong GetUInt64(int id, ulong def = 0) { long p = Field(id, 8); return p < 0 ? def : BinaryPrimitives.ReadUInt64LittleEndian(_r.Bytes(p, 8)); }
    public float GetFloat(int id, float def = 0) { long p = Field(id, 4); return p < 0 ? def : BinaryPrimitives.ReadSingleLittleEndian(_r.Bytes(p, 4)); }

    /// <summary>An inline struct of two uint64 fields, or null when absent.</summary>
    public (ulong First, ulong Second)? GetStruct2xU64(int id)
    {
        long p = Field(id, 16);
        if (p < 0) return null;
        var b = _r.Bytes(p, 16);
        return (BinaryPrimitives.ReadUInt64LittleEndian(b), BinaryPrimitives.ReadUInt64LittleEndian(b[8..]));
    }

    public string? GetString(int id, string field)
    {
        long p = Field(id, 4);
        return p < 0 ? null : _r.StringAt(_r.Deref(p, $"{_what}.{field}"), $"{_what}.{field}");
    }

    public FbTable? GetTable(int id, string field)
    {
        long p = Field(id, 4);
        return p < 0 ? null : _r.TableAt(_r.Deref(p, $"{_what}.{field}"), $"{_what}.{field}");
    }

    /// <summary>A vector field; <paramref name="elementSize"/> is 4 for vectors of tables or strings.</summary>
    public FbVector? GetVector(int id, int elementSize, string field)
    {
        long p = Field(id, 4);
        return p < 0 ? null : _r.VectorAt(_r.Deref(p, $"{_what}.{field}"), elementSize, $"{_what}.{field}");
    }

    public string GetRequiredString(int id, string field) =>
        GetString(id, field) ?? throw new FlatBufferFormatException($"{_what}: required field '{field}' is missing");

    public FbVector GetRequiredVector(int id, int elementSize, string field) =>
        GetVector(id, elementSize, field) ?? throw new FlatBufferFormatException($"{_what}: required field '{field}' is missing");
}

/// <summary>A vector inside a <see cref="FlatBufferReader"/>; its element count has been checked against the buffer.</summary>
public readonly struct FbVector
{
    private readonly FlatBufferReader _r;
    private readonly long _start;
    private readonly int _elementSize;
    private readonly string _what;

    internal FbVector(FlatBufferReader r, long start, int count, int elementSize, string what)
    {
        _r = r; _start = start; Count = count; _elementSize = elementSize; _what = what;
    }

    public int Count { get; }

    private long At(int i)
    {
        if ((uint)i >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(i));
        return _start + (long)i * _elementSize;
    }

    public byte UInt8(int i) => _r.Bytes(At(i), 1)[0];
    public int Int32(int i) => BinaryPrimitives.ReadInt32LittleEndian(_r.Bytes(At(i), 4));
    public ulong UInt64(int i) => BinaryPrimitives.ReadUInt64LittleEndian(_r.Bytes(At(i), 8));
    public ReadOnlySpan<byte> Bytes() => _r.Bytes(_start, Count * _elementSize);

    public (ulong First, ulong Second) Struct2xU64(int i)
    {
        var b = _r.Bytes(At(i), 16);
        return (BinaryPrimitives.ReadUInt64LittleEndian(b), BinaryPrimitives.ReadUInt64LittleEndian(b[8..]));
    }

    public FbTable Table(int i) => _r.TableAt(_r.Deref(At(i), $"{_what}[{i}]"), $"{_what}[{i}]");
    public string String(int i) => _r.StringAt(_r.Deref(At(i), $"{_what}[{i}]"), $"{_what}[{i}]");
}
