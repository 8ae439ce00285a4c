package MdmWatch::Pki;

# A throw-away certificate authority for tests and the demo: a trusted
# test root, device identity certificates for watches, the broken
# variants a verifier must refuse, the MDM identity certificates of
# phones under a device CA of their own, and a TLS server certificate.
# Everything is made with the openssl command line tool and cached in
# one directory.

use strict;
use warnings;

use Carp qw(croak);
use Fcntl qw(:flock);
use File::Path qw(make_path remove_tree);
use Digest::SHA qw(sha256_hex);
use File::Temp qw(tempfile);
use POSIX qw(strftime _exit);

our $VERSION = '1';

my $DEFAULT_UDID = '00008301-0A1B2C3D4E5F6071';
my $DEFAULT_OTHER_UDID = '00008301-0F0E0D0C0B0A0918';
my $DEFAULT_PHONE_UDID = '00008110-000A1B2C3D4E5F60';
my $DEFAULT_OTHER_PHONE_UDID = '00008110-000F0E0D0C0B0A09';
my $DAYS = 3650;

# name => [ how it is made, subject, issuer ]; the subject 'udid',
# 'other_udid', 'phone_udid' or 'other_phone_udid' stands for CN = that
# UDID
my $TESTS = '/O=MDM Watch Tests';
my @ENTITIES = (
    [ ca            => 'root',    "$TESTS/CN=MDM Watch Test Root CA" ],
    [ intermediate  => 'sub',     "$TESTS/CN=MDM Watch Test Sub CA", 'ca' ],
    [ watch         => 'device',  'udid', 'ca' ],
    [ other_watch   => 'device',  'other_udid', 'ca' ],
    [ chained_watch => 'device',  'udid', 'intermediate' ],
    [ rogue_ca      => 'root',    '/O=MDM Watch Rogue/CN=Untrusted Root CA' ],
    [ rogue_watch   => 'device',  'udid', 'rogue_ca' ],
    [ self_signed   => 'self',    'udid' ],
    [ expired       => 'expired', 'udid', 'ca' ],
    [ device_ca     => 'root',    "$TESTS/CN=MDM Watch Test Device CA" ],
    [ phone         => 'phone',   'phone_udid', 'device_ca' ],
    [ other_phone   => 'phone',   'other_phone_udid', 'device_ca' ],
    [ server        => 'server',  "$TESTS/CN=127.0.0.1", 'ca' ],
);

my %ENTITY = map { $_->[0] => $_ } @ENTITIES;

=head1 NAME

MdmWatch::Pki - test certificates for watch machine info signatures

=head1 SYNOPSIS

    my $pki = MdmWatch::Pki->new(dir => $dir);
    $pki->ca_file;              # give to mdm_watch_trusted_certificate
    $pki->cert('watch');        # PEM device certificate, CN = watch UDID
    $pki->key('watch');         # its PEM private key
    $pki->cert('phone');        # a phone's MDM identity certificate
    $pki->identity('phone');    # hex SHA-256 of its DER

=head1 DESCRIPTION

C<new> creates, unless already present, in C<dir>:

    ca              test root CA (CA:TRUE, keyCertSign), 10 years
    intermediate    a sub CA under ca
    watch           device certificate under ca, CN = udid
    other_watch     device certificate under ca, CN = other_udid
    chained_watch   device certificate under intermediate, CN = udid
    rogue_ca        a root nginx does not trust
    rogue_watch     device certificate under rogue_ca, CN = udid
    self_signed     self-signed device certificate, CN = udid
    expired         device certificate under ca, validity in the past
    device_ca       a root of its own: the CA of the MDM server that
                    issues the identity certificates of enrolled devices
    phone           a phone's MDM identity certificate under device_ca,
                    CN = phone_udid
    other_phone     another phone's, CN = other_phone_udid
    server          a TLS server certificate under ca for 127.0.0.1

Device certificates have keyUsage digitalSignature and no extended key
usage; the phones' add the extended key usage clientAuth, so that they
serve as TLS client certificates too, and the server's serverAuth with
the subject alternative names 127.0.0.1 and localhost.  Options:
C<udid>, C<other_udid>, C<phone_udid> (00008110-000A1B2C3D4E5F60),
C<other_phone_udid> (00008110-000F0E0D0C0B0A09), C<key_type> (C<ec> for
P-256,
the default for a new directory, or C<rsa> for RSA 2048; without it an
existing directory keeps its type).  A second C<new> with the same
options only checks the files; other UDIDs remake the device
certificates and keep the CAs.  Generation takes a lock, so parallel
test scripts can share one directory.

=cut

sub new {
    my ($class, %opt) = @_;
    my $dir = $opt{dir} or croak 'MdmWatch::Pki->new: dir is required';

    my $self = bless {
        dir        => $dir,
        udid       => $opt{udid} // $DEFAULT_UDID,
        other_udid => $opt{other_udid} // $DEFAULT_OTHER_UDID,
        key_type   => $opt{key_type} // _old_key_type($dir) // 'ec',
        phone_udid => $opt{phone_udid} // $DEFAULT_PHONE_UDID,
        other_phone_udid =>
            $opt{other_phone_udid} // $DEFAULT_OTHER_PHONE_UDID,
    }, $class;

    croak "MdmWatch::Pki: unknown key_type $self->{key_type}"
        unless $self->{key_type} =~ /^(?:ec|rsa)$/;

    make_path($dir);
    $self->_ensure;
    return $self;
}

sub dir { $_[0]{dir} }
sub udid { $_[0]{udid} }
sub other_udid { $_[0]{other_udid} }
sub phone_udid { $_[0]{phone_udid} }
sub other_phone_udid { $_[0]{other_phone_udid} }
sub ca_file { $_[0]->cert('ca') }
sub names { map { $_->[0] } @ENTITIES }

sub cert {
    my ($self, $name) = @_;
    croak "MdmWatch::Pki: no certificate named '$name'" unless $ENTITY{$name};
    return "$self->{dir}/$name.pem";
}

sub key {
    my ($self, $name) = @_;
    croak "MdmWatch::Pki: no key named '$name'" unless $ENTITY{$name};
    return "$self->{dir}/$name.key";
}

=head2 der($name), identity($name)

C<der> is the certificate in DER; C<identity> is what the module records
as a device's identity: the SHA-256 of that DER in lower-case hex.

=cut

sub der {
    my ($self, $name) = @_;
    return run('openssl', 'x509', '-in', $self->cert($name),
        '-outform', 'DER');
}

sub identity {
    my ($self, $name) = @_;
    return sha256_hex($self->der($name));
}

=head2 MdmWatch::Pki::run(@command)

Runs a command with no shell, stdin from /dev/null and its output
captured.  Returns the standard output; dies with the command and its
standard error if it fails.

=cut

sub run {
    my @cmd = @_;

    # not UNLINK => 1: File::Temp would keep both handles open until exit
    my ($out_fh, $out) = tempfile();
    my ($err_fh, $err) = tempfile();

    my $pid = fork // die "fork: $!\n";
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>&', $out_fh;
        open STDERR, '>&', $err_fh;
        { exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0]: $!\n";
        _exit(127);
    }
    waitpid $pid, 0;
    my $status = $?;

    my $stdout = _slurp($out);
    my $stderr = _slurp($err);
    close $out_fh;
    close $err_fh;
    unlink $out, $err;

    if ($status != 0) {
        my $why = $status & 127 ? 'signal ' . ($status & 127)
                                : 'exit ' . ($status >> 8);
        die "@cmd: failed ($why)\n" . $stderr;
    }
    return $stdout;
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or die "open $file: $!\n";
    local $/;
    my $data = <$fh> // '';
    return $data;
}

sub _old_key_type {
    my ($dir) = @_;
    return undef unless -f "$dir/pki.stamp";
    return _slurp("$dir/pki.stamp") =~ /^v1 key_type=(\w+) / ? $1 : undef;
}

sub _stamp {
    my ($self) = @_;
    return join ' ', 'v1', map { "$_=$self->{$_}" }
        qw(key_type udid other_udid phone_udid other_phone_udid);
}

sub _complete {
    my ($self) = @_;
    my $stamp = "$self->{dir}/pki.stamp";
    return 0 unless -f $stamp && _slurp($stamp) eq $self->_stamp . "\n";
    for my $name ($self->names) {
        return 0 unless -s $self->cert($name) && -s $self->key($name);
    }
    return 1;
}

sub _ensure {
    my ($self) = @_;
    return if $self->_complete;

    open my $lock, '>>', "$self->{dir}/pki.lock"
        or die "open $self->{dir}/pki.lock: $!\n";
    flock $lock, LOCK_EX or die "flock: $!\n";

    # another process may have finished while this one waited
    return if $self->_complete;

    my $work = "$self->{dir}/pki.work.$$";
    remove_tree($work);
    make_path("$work/newcerts");
    $self->_keep_authorities($work);
    unlink "$self->{dir}/pki.stamp";

    $self->_write_config($work);
    for my $entity (@ENTITIES) {
        $self->_make($work, $entity) unless -s "$work/$entity->[0].pem";
    }

    for my $name ($self->names) {
        for my $ext (qw(pem key)) {
            rename "$work/$name.$ext", "$self->{dir}/$name.$ext"
                or die "rename $work/$name.$ext: $!\n";
        }
    }
    remove_tree($work);
    _spew("$self->{dir}/pki.stamp", $self->_stamp . "\n");
    close $lock;
}

sub _keep_authorities {
    my ($self, $work) = @_;
    my $stamp = "$self->{dir}/pki.stamp";

    # other UDIDs need new device certificates only: the CAs stay, so a
    # running nginx keeps trusting the same ca.pem
    return unless -f $stamp
        && _slurp($stamp) =~ /^v1 key_type=\Q$self->{key_type}\E /;

    for my $entity (grep { $_->[1] =~ /^(?:root|sub)$/ } @ENTITIES) {
        my $name = $entity->[0];
        next unless -s $self->cert($name) && -s $self->key($name);
        for my $ext (qw(pem key)) {
            _spew("$work/$name.$ext", _slurp("$self->{dir}/$name.$ext"));
        }
        chmod 0600, "$work/$name.key";
    }
}

sub _spew {
    my ($file, $data) = @_;
    open my $fh, '>:raw', $file or die "open $file: $!\n";
    print {$fh} $data or die "write $file: $!\n";
    close $fh or die "close $file: $!\n";
}

sub _write_config {
    my ($self, $work) = @_;

    _spew("$work/openssl.cnf", <<"END");
# openssl configuration for the MdmWatch::Pki test certificates

[ req ]
distinguished_name = req_dn
prompt             = no

[ req_dn ]
CN = unused

[ v3_root ]
basicConstraints       = critical, CA:TRUE
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash

[ v3_sub ]
basicConstraints       = critical, CA:TRUE, pathlen:0
keyUsage               = critical, keyCertSign, cRLSign
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_device ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_self ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
subjectKeyIdentifier   = hash

[ v3_phone ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = clientAuth
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ v3_server ]
basicConstraints       = critical, CA:FALSE
keyUsage               = critical, digitalSignature
extendedKeyUsage       = serverAuth
subjectAltName         = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier   = hash
authorityKeyIdentifier = keyid:always

[ ca ]
default_ca = past_ca

[ past_ca ]
database        = $work/index.txt
new_certs_dir   = $work/newcerts
serial          = $work/serial
default_md      = sha256
policy          = policy_any
unique_subject  = no
copy_extensions = none
email_in_dn     = no

[ policy_any ]
commonName = supplied
END

    _spew("$work/index.txt", '');
    _spew("$work/serial", _serial() . "\n");
}

sub _serial {
    # 64 random bits, high bit clear so the serial stays positive
    my $hex = sprintf '%02X', 0x10 + int rand 0x60;
    $hex .= sprintf '%02X', int rand 256 for 1 .. 7;
    return $hex;
}

sub _make {
    my ($self, $work, $entity) = @_;
    my ($name, $how, $subject, $issuer) = @$entity;

    $subject = "/CN=$self->{$subject}"
        if $subject =~ /^(?:other_)?(?:phone_)?udid$/;
    my $key = "$work/$name.key";
    my $pem = "$work/$name.pem";
    my $cnf = "$work/openssl.cnf";

    $self->_genkey($key);

    if ($how eq 'root' || $how eq 'self') {
        run('openssl', 'req', '-config', $cnf, '-new', '-x509',
            '-key', $key, '-subj', $subject, '-sha256', '-days', $DAYS,
            '-set_serial', '0x' . _serial(),
            '-extensions', $how eq 'root' ? 'v3_root' : 'v3_self',
            '-out', $pem);
        return;
    }

    run('openssl', 'req', '-config', $cnf, '-new', '-key', $key,
        '-subj', $subject, '-out', "$work/$name.csr");

    if ($how eq 'expired') {
        $self->_sign_expired($work, $name, $issuer);
        return;
    }

    my %extensions = (sub => 'v3_sub', phone => 'v3_phone',
        server => 'v3_server');
    run('openssl', 'x509', '-req', '-in', "$work/$name.csr",
        '-CA', "$work/$issuer.pem", '-CAkey', "$work/$issuer.key",
        '-set_serial', '0x' . _serial(), '-sha256', '-days', $DAYS,
        '-extfile', $cnf,
        '-extensions', $extensions{$how} // 'v3_device',
        '-out', $pem);
}

sub _genkey {
    my ($self, $key) = @_;
    my @alg = $self->{key_type} eq 'rsa'
        ? ('-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048')
        : ('-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256');
    run('openssl', 'genpkey', @alg, '-out', $key);
}

sub _sign_expired {
    my ($self, $work, $name, $issuer) = @_;

    # "openssl x509" of OpenSSL 3.0 cannot set the validity dates;
    # "openssl ca" can
    my $start = strftime('%Y%m%d%H%M%SZ', gmtime(time - 30 * 86400));
    my $end = strftime('%Y%m%d%H%M%SZ', gmtime(time - 86400));

    run('openssl', 'ca', '-config', "$work/openssl.cnf", '-batch',
        '-notext', '-in', "$work/$name.csr",
        '-cert', "$work/$issuer.pem", '-keyfile', "$work/$issuer.key",
        '-startdate', $start, '-enddate', $end,
        '-extfile', "$work/openssl.cnf", '-extensions', 'v3_device',
        '-out', "$work/$name.pem");
}

1;
