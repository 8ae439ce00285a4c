package MdmWatch::Message;

# The device side of the watch pairing protocol, as docs and tests need
# it: machine info plists and their CMS signatures, GetToken and the
# other check-in messages, the Mdm-Signature header of a device message,
# and reading TokenData from the answer.

use strict;
use warnings;

use Carp qw(croak);
use Exporter qw(import);
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64 decode_base64);

use MdmWatch::Pki;

our $VERSION = '1';

our @EXPORT_OK = qw(machine_info to_binary sign checkin get_token
    token_update authenticate command_result parse_token_data
    plist xml_escape mdm_signature check_out);
our %EXPORT_TAGS = (all => \@EXPORT_OK);

# base64 in <data> is written on one line; set to a multiple of 4 to
# wrap it as Apple's serializer does (it uses lines of 52 and tabs)
our $DATA_WRAP = 0;

my $HEADER = qq{<?xml version="1.0" encoding="UTF-8"?>\n}
    . qq{<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" }
    . qq{"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n};

my @MACHINE_INFO_KEYS = qw(UDID SERIAL PRODUCT VERSION OS_VERSION LANGUAGE);

my %MACHINE_INFO_DEFAULTS = (
    UDID       => '00008301-0A1B2C3D4E5F6071',
    SERIAL     => 'WTCHSERIAL01',
    PRODUCT    => 'Watch7,1',
    VERSION    => '21R355',
    OS_VERSION => '10.0',
    LANGUAGE   => 'en',
);

=head1 NAME

MdmWatch::Message - the watch and phone messages of watch pairing

=head1 SYNOPSIS

    use MdmWatch::Message qw(:all);

    my $xml  = machine_info(PAIRING_TOKEN => $token_data);
    my $body = sign($xml, pki => $pki);     # DER CMS SignedData
    my $put  = get_token(udid => $phone, security_token => $st,
                         watch_udid => $watch);
    my $data = parse_token_data($response_body);
    my $header = mdm_signature($put, signer => 'phone', pki => $pki);

=head1 FUNCTIONS

=head2 plist(@pairs), xml_escape($string)

C<< plist(key => value, ...) >> is an XML plist of one dictionary whose
keys keep the order given.  Values: a plain scalar is a string; a
scalar reference is data (base64); a hash reference is a nested
dictionary (keys sorted); an array reference is an array; a reference
to a reference (C<\\'true'>, C<\\'false'>, C<\\42>) is a boolean or
an integer.  An undefined value leaves the key out.  C<xml_escape>
escapes &, <, > and ".

=cut

sub plist {
    my @pairs = @_;
    croak 'plist: odd number of arguments' if @pairs % 2;
    return $HEADER . "<plist version=\"1.0\">\n"
        . _dict(\@pairs, 0) . "</plist>\n";
}

sub xml_escape {
    my ($s) = @_;
    $s =~ s/&/&amp;/g;
    $s =~ s/</&lt;/g;
    $s =~ s/>/&gt;/g;
    $s =~ s/"/&quot;/g;
    return $s;
}

sub _dict {
    my ($pairs, $depth) = @_;
    my $pad = "\t" x $depth;
    my $xml = "$pad<dict>\n";
    for (my $i = 0; $i < @$pairs; $i += 2) {
        my ($k, $v) = @$pairs[$i, $i + 1];
        next unless defined $v;
        $xml .= "$pad\t<key>" . xml_escape($k) . "</key>\n";
        $xml .= _value($v, $depth + 1);
    }
    return "$xml$pad</dict>\n";
}

sub _value {
    my ($v, $depth) = @_;
    my $pad = "\t" x $depth;
    my $ref = ref $v;

    return "$pad<string>" . xml_escape($v) . "</string>\n" if !$ref;
    return _data($$v, $depth) if $ref eq 'SCALAR';
    return _dict([map { $_ => $v->{$_} } sort keys %$v], $depth)
        if $ref eq 'HASH';
    return _scalar_type($$v, $depth) if $ref eq 'REF';

    if ($ref eq 'ARRAY') {
        return join '', "$pad<array>\n",
            (map { _value($_, $depth + 1) } @$v), "$pad</array>\n";
    }
    croak "plist: cannot write a $ref";
}

sub _scalar_type {
    my ($inner, $depth) = @_;
    my $pad = "\t" x $depth;
    my $v = $$inner;
    return "$pad<$v/>\n" if $v =~ /^(?:true|false)$/;
    return "$pad<integer>$v</integer>\n" if $v =~ /^-?\d+$/;
    croak "plist: '$v' is neither a boolean nor an integer";
}

sub _data {
    my ($bytes, $depth) = @_;
    my $pad = "\t" x $depth;
    my $b64 = encode_base64($bytes, '');

    return "$pad<data>$b64</data>\n" unless $DATA_WRAP && length $b64;
    my @lines = unpack "(A$DATA_WRAP)*", $b64;
    return "$pad<data>\n" . join('', map { "$pad$_\n" } @lines)
        . "$pad</data>\n";
}

=head2 machine_info(%fields)

The machine info plist a watch signs.  UDID, SERIAL, PRODUCT, VERSION,
OS_VERSION and LANGUAGE have watch defaults; C<KEY =E<gt> undef> leaves
one out.  C<PAIRING_TOKEN =E<gt> $bytes> is written as data.  Other keys
are strings (or data, given a scalar reference), after the standard
ones, in sorted order.

=cut

sub machine_info {
    my (%f) = @_;
    my %v = (%MACHINE_INFO_DEFAULTS, %f);
    my @pairs = map { $_ => $v{$_} } @MACHINE_INFO_KEYS;

    if (defined $v{PAIRING_TOKEN}) {
        my $t = $v{PAIRING_TOKEN};
        push @pairs, PAIRING_TOKEN => ref $t ? $t : \$t;
    }
    for my $k (sort keys %f) {
        next if exists $MACHINE_INFO_DEFAULTS{$k} || $k eq 'PAIRING_TOKEN';
        push @pairs, $k => $f{$k};
    }
    return plist(@pairs);
}

=head2 to_binary($xml)

The same plist in Apple's binary format, by C<plistutil -f bin>.

=cut

sub to_binary {
    my ($xml) = @_;
    my $tmp = tempdir(CLEANUP => 1);
    _write("$tmp/in.plist", $xml);
    MdmWatch::Pki::run('plistutil', '-i', "$tmp/in.plist",
        '-o', "$tmp/out.plist", '-f', 'bin');
    my $bin = _read("$tmp/out.plist");
    croak 'to_binary: plistutil wrote no binary plist'
        unless substr($bin, 0, 8) eq 'bplist00';
    return $bin;
}

=head2 sign($content, %opt)

CMS SignedData over C<$content>, content attached, SHA-256, by
C<openssl cms -sign>.  Options:

    pki     an MdmWatch::Pki (required unless cert and key are given)
    signer  a certificate name of the pki, default 'watch'
    cert, key   explicit signer files, instead of signer
    certs   [ files ] more certificates to put in the CMS
    form    'der' (default) or 'ber': indefinite lengths, by -stream
    md      digest, default sha256
    nocerts 1 to leave the signer certificate out

=cut

sub sign {
    my ($content, %opt) = @_;
    my $form = $opt{form} // 'der';
    croak "sign: form must be der or ber" unless $form =~ /^(?:der|ber)$/;

    my ($cert, $key) = _signer(%opt);
    my $tmp = tempdir(CLEANUP => 1);
    _write("$tmp/content", $content);

    my @cmd = ('openssl', 'cms', '-sign', '-nodetach', '-binary',
        '-md', $opt{md} // 'sha256', '-outform', 'DER',
        '-signer', $cert, '-inkey', $key,
        '-in', "$tmp/content", '-out', "$tmp/cms");
    push @cmd, '-stream' if $form eq 'ber';
    push @cmd, '-nocerts' if $opt{nocerts};
    if ($opt{certs} && @{ $opt{certs} }) {
        _write("$tmp/certs.pem", join '', map { _read($_) } @{ $opt{certs} });
        push @cmd, '-certfile', "$tmp/certs.pem";
    }
    MdmWatch::Pki::run(@cmd);

    my $cms = _read("$tmp/cms");
    _check_form($cms, $form);
    return $cms;
}

=head2 mdm_signature($body, %opt)

The value of the C<Mdm-Signature> header a device sends with a message:
the base64 (one line) of a detached CMS SignedData over the exact bytes
of C<$body>, DER, SHA-256, with the signer's certificate, by
C<openssl cms -sign> without C<-nodetach>.  Options as for C<sign>, but
C<signer> defaults to C<phone>; and C<certificate>, the name of another
certificate of the pki to carry in the place of the signer's, so that
the signature is made by a key that the certificate it carries does not
hold.

=cut

sub mdm_signature {
    my ($body, %opt) = @_;
    my ($cert, $key) = _signer(signer => 'phone', %opt);
    my $tmp = tempdir(CLEANUP => 1);
    _write("$tmp/body", $body);

    my @cmd = ('openssl', 'cms', '-sign', '-binary',
        '-md', $opt{md} // 'sha256', '-outform', 'DER',
        '-signer', $cert, '-inkey', $key,
        '-in', "$tmp/body", '-out', "$tmp/cms");
    push @cmd, '-nocerts' if $opt{nocerts};
    MdmWatch::Pki::run(@cmd);

    my $cms = _read("$tmp/cms");
    _check_form($cms, 'der');
    if (defined $opt{certificate}) {
        my $pki = $opt{pki} or croak 'mdm_signature: certificate needs pki';
        $cms = _replace_certificates($cms, $pki->der($opt{certificate}));
    }
    return encode_base64($cms, '');
}

# the CMS with the certificates of its SignedData replaced by one DER
# certificate, which its signer infos then name as their signer (issuer
# and serial number); definite lengths only, as "openssl cms -outform
# DER" writes
sub _replace_certificates {
    my ($cms, $cert) = @_;

    my ($info) = _der_items($cms);
    my ($oid, $explicit) = _der_items($info->[1]);
    my ($signed) = _der_items($explicit->[1]);
    my @fields = _der_items($signed->[1]);

    my ($certs) = grep { $fields[$_][0] == 0xa0 } 0 .. $#fields;
    croak 'mdm_signature: the SignedData carries no certificates'
        unless defined $certs && $fields[-1][0] == 0x31;
    $fields[$certs] = [0xa0, $cert];

    my $sid = _issuer_and_serial($cert);
    my @infos = map {
        my @f = _der_items($_->[1]);
        croak 'mdm_signature: a signer info names its signer by key id'
            unless $f[1][0] == 0x30;
        $f[1] = [0x30, $sid];
        [0x30, join '', map { _der(@$_) } @f];
    } _der_items($fields[-1][1]);
    $fields[-1] = [0x31, join '', map { _der(@$_) } @infos];

    my $signed_data = _der(0x30, join '', map { _der(@$_) } @fields);
    return _der(0x30, _der(@$oid) . _der(0xa0, $signed_data));
}

# the content of the IssuerAndSerialNumber of a DER certificate
sub _issuer_and_serial {
    my ($cert) = @_;
    my ($certificate) = _der_items($cert);
    my ($tbs) = _der_items($certificate->[1]);
    my @tbs = _der_items($tbs->[1]);
    shift @tbs if $tbs[0][0] == 0xa0;       # the version
    my ($serial, undef, $issuer) = @tbs;
    return _der(@$issuer) . _der(@$serial);
}

# the items of DER content, each as [ tag, content ]
sub _der_items {
    my ($bytes) = @_;
    my @items;
    my $off = 0;

    while ($off < length $bytes) {
        my $tag = ord substr $bytes, $off, 1;
        my $len = ord substr $bytes, $off + 1, 1;
        my $head = 2;
        if ($len & 0x80) {
            my $n = $len & 0x7f;
            croak 'DER: a length of ' . ($n ? "$n bytes" : 'no end')
                unless $n >= 1 && $n <= 4;
            $len = 0;
            $len = $len << 8 | ord substr $bytes, $off + 2 + $_, 1
                for 0 .. $n - 1;
            $head += $n;
        }
        croak 'DER: an item runs past the end'
            if $off + $head + $len > length $bytes;
        push @items, [$tag, substr($bytes, $off + $head, $len)];
        $off += $head + $len;
    }
    return @items;
}

sub _der {
    my ($tag, $content) = @_;
    my $n = length $content;
    return chr($tag) . chr($n) . $content if $n < 128;

    my $len = '';
    for (; $n; $n >>= 8) {
        $len = chr($n & 0xff) . $len;
    }
    return chr($tag) . chr(0x80 | length $len) . $len . $content;
}

sub _signer {
    my (%opt) = @_;
    return ($opt{cert}, $opt{key}) if $opt{cert} && $opt{key};
    my $pki = $opt{pki} or croak 'sign: pki (or cert and key) required';
    my $name = $opt{signer} // 'watch';
    return ($pki->cert($name), $pki->key($name));
}

sub _check_form {
    my ($cms, $form) = @_;
    croak 'sign: openssl wrote no SEQUENCE' unless ord($cms) == 0x30;
    my $indefinite = ord(substr $cms, 1, 1) == 0x80;
    croak "sign: asked for $form but got "
        . ($indefinite ? 'indefinite' : 'definite') . ' lengths'
        if $indefinite != ($form eq 'ber');
}

=head2 checkin(@pairs)

An XML check-in plist, keys in the order given; values as for C<plist>
(a hash reference is a nested dictionary, C<\$bytes> is data).

=cut

sub checkin {
    return plist(@_);
}

=head2 get_token(%f)

The phone's GetToken check-in.  C<udid> (the phone), C<security_token>,
C<watch_udid>; C<phone_udid> defaults to C<udid>, C<service> to
C<com.apple.watch.pairing>.  Passing a field as undef leaves it out.

=cut

sub get_token {
    my (%f) = @_;
    my $udid = $f{udid};
    my $phone = exists $f{phone_udid} ? $f{phone_udid} : $udid;
    my $service = exists $f{service} ? $f{service}
                                     : 'com.apple.watch.pairing';
    my $params = {
        SecurityToken => $f{security_token},
        PhoneUDID     => $phone,
        WatchUDID     => $f{watch_udid},
    };
    delete @$params{ grep { !defined $params->{$_} } keys %$params };

    return checkin(
        MessageType      => 'GetToken',
        UDID             => $udid,
        TokenServiceType => $service,
        TokenParameters  => $params,
    );
}

=head2 token_update(%f), authenticate(%f), check_out(%f), command_result(%f)

Ordinary device messages, for the traffic that passes through.  All take
C<udid> and C<topic>; C<token_update> also C<token> and C<push_magic>;
C<authenticate> C<product>, C<serial>, C<os_version>, C<build_version>,
C<device_name>, C<model> and C<model_name> (a watch's, by default);
C<command_result> C<status> (default Acknowledged) and C<command_uuid>.

=cut

sub token_update {
    my (%f) = @_;
    return checkin(
        MessageType => 'TokenUpdate',
        Topic       => $f{topic} // _topic(),
        UDID        => $f{udid},
        Token       => \($f{token} // pack('H*', 'a1' x 32)),
        PushMagic   => $f{push_magic} // _uuid(),
    );
}

sub authenticate {
    my (%f) = @_;
    return checkin(
        MessageType  => 'Authenticate',
        Topic        => $f{topic} // _topic(),
        UDID         => $f{udid},
        BuildVersion => $f{build_version} // '21R355',
        OSVersion    => $f{os_version} // '10.0',
        ProductName  => $f{product} // 'Watch7,1',
        SerialNumber => $f{serial} // 'WTCHSERIAL01',
        DeviceName   => $f{device_name} // 'Apple Watch',
        Model        => $f{model} // 'MR9A2',
        ModelName    => $f{model_name} // 'Apple Watch',
    );
}

sub check_out {
    my (%f) = @_;
    return checkin(
        MessageType => 'CheckOut',
        Topic       => $f{topic} // _topic(),
        UDID        => $f{udid},
    );
}

sub command_result {
    my (%f) = @_;
    return checkin(
        UDID        => $f{udid},
        Status      => $f{status} // 'Acknowledged',
        CommandUUID => $f{command_uuid} // _uuid(),
    );
}

sub _topic {
    return 'com.apple.mgmt.External.0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0';
}

sub _uuid {
    my @b = map { int rand 256 } 1 .. 16;
    $b[6] = ($b[6] & 0x0f) | 0x40;
    $b[8] = ($b[8] & 0x3f) | 0x80;
    my $hex = uc join '', map { sprintf '%02x', $_ } @b;
    return join '-', unpack 'A8 A4 A4 A4 A12', $hex;
}

=head2 parse_token_data($body)

The bytes of C<TokenData> in a GetToken answer (XML, or binary through
plistutil); undef if there is none.

=cut

sub parse_token_data {
    my ($body) = @_;
    return undef unless defined $body;
    $body = _to_xml($body) if substr($body, 0, 8) eq 'bplist00';

    return undef
        unless $body =~ m{<key>\s*TokenData\s*</key>\s*<data>([^<]*)</data>};
    (my $b64 = $1) =~ s/\s+//g;
    return decode_base64($b64);
}

sub _to_xml {
    my ($bin) = @_;
    my $tmp = tempdir(CLEANUP => 1);
    _write("$tmp/in.plist", $bin);
    MdmWatch::Pki::run('plistutil', '-i', "$tmp/in.plist",
        '-o', "$tmp/out.plist", '-f', 'xml');
    return _read("$tmp/out.plist");
}

sub _write {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or die "open $file: $!\n";
    print {$fh} $data or die "write $file: $!\n";
    close $fh or die "close $file: $!\n";
}

sub _read {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "open $file: $!\n";
    local $/;
    return scalar(<$fh>) // '';
}

1;
