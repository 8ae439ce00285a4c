#!/usr/bin/perl

# The check-in location learns the devices the MDM server enrolls: an
# Authenticate or a TokenUpdate that the MDM server accepts records the
# device in Redis, with the identity that signed it (Mdm-Signature, else
# the TLS client certificate nginx verified); a refused one records
# nothing; a TokenUpdate of another identity changes nothing, while an
# Authenticate, a new enrollment, replaces the record.  Whatever the
# module records, the check-in and its answer pass through as they are,
# and a signature that does not verify or a Redis that fails never
# refuses or delays them.  What CheckOut removes is in 93-checkout.t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(checkin token_update authenticate command_result);
use MdmWatch::Test;

my $CHECKIN = $MdmWatch::Test::CHECKIN_URI;
my $CHECKIN_TYPE = $MdmWatch::Test::CHECKIN_TYPE;

my ($tls, $tls_no_ca) = MdmWatch::Test::free_ports(2);
my $t = MdmWatch::Test->new;
my $pki = $t->pki;
my $phone = $pki->phone_udid;
my $other_phone = $pki->other_phone_udid;
my %identity = map { $_ => $pki->identity($_) } qw(phone other_phone);

# a second server whose TLS accepts any client certificate
# (optional_no_ca): one the device CA did not issue is presented, but
# nginx does not verify it
my $no_ca_server = <<"END";
    server {
        listen 127.0.0.1:$tls_no_ca ssl;
        ssl_certificate @{[ $pki->cert('server') ]};
        ssl_certificate_key @{[ $pki->key('server') ]};
        ssl_verify_client optional_no_ca;
        ssl_client_certificate @{[ $pki->cert('device_ca') ]};

        location = $CHECKIN {
            mdm_watch_checkin;
            proxy_pass http://mdm;
        }
    }
END

$t->setup(phone => 0, http => $no_ca_server,
    server => $t->tls_server_directives($tls));

# device UDIDs of this test, made from a number
sub udid { sprintf '00008110-%016X', 0x900 + $_[0] }

sub record_ok {
    my ($what, $udid, %want) = @_;
    my $t0 = $want{since} // time;
    delete $want{since};

    my $record = $t->wait_device($udid, sub {
        ($_[0]{message} // '') eq $want{message}
            && ($_[0]{identity} // '') eq $want{identity}
    });
    ok($record, "$what: the device is recorded")
        or diag(explain($t->device_record($udid)));
    $record //= $t->device_record($udid);

    my %got = %$record;
    my $at = delete $got{enrolled_at} // '';
    is_deeply(\%got, { udid => uc $udid, %want },
        "$what: the record holds the UDID in upper case, the message and"
        . ' the identity');
    ok($at =~ /^\d+$/ && $at >= int($t0) - 1 && $at <= time + 1,
        "$what: enrolled_at is the time, in unix seconds")
        or diag("enrolled_at '$at'");
    is($t->redis('TYPE', $t->device_key($udid)), 'hash',
        "$what: the record is a hash");
    is($t->redis_ttl($t->device_key($udid)), -1,
        "$what: the record does not expire");
    return $record;
}

# asserts that what $send sends changes nothing in Redis, once the
# module has recorded what it was to record
sub records_nothing {
    my ($what, $send) = @_;
    my $before = $t->redis_snapshot;
    $send->();
    ok($t->registry_barrier, "$what: the module records again after it");
    $t->redis_unchanged_ok($before, "$what: Redis is unchanged");
}

# sends a check-in to the check-in location (over TLS with tls => PORT),
# asserts that the MDM server received it byte for byte and that its
# answer came back; returns the answer
sub passes {
    my ($what, $body, %o) = @_;
    my @headers = (['Content-Type', $CHECKIN_TYPE], @{ $o{headers} // [] });
    push @headers, ['Mdm-Signature', $t->mdm_signature($body, $o{signer})]
        if defined $o{signer};
    push @headers, ['Mdm-Signature', $o{signature}] if defined $o{signature};
    push @headers, ['X-Standin-Status', $o{status}] if defined $o{status};
    my $before = $t->upstream_count;

    my $res = $o{tls}
        ? $t->tls_request(port => $o{tls}, client => $o{client},
            method => 'PUT', uri => $CHECKIN, headers => \@headers,
            body => $body)
        : $t->request(method => 'PUT', uri => $CHECKIN,
            headers => \@headers, body => $body);

    is($res->{status}, $o{status} // 200,
        "$what: the device gets the status of the MDM server")
        or diag(MdmWatch::Test::describe($res) . ($res->{tls_log} // ''));
    my @up = $t->upstream_requests;
    is(scalar @up, $before + 1, "$what: the MDM server received it once");
    $t->passed_ok($up[$before], method => 'PUT', uri => $CHECKIN,
        body => $body, headers => \@headers,
        name => "$what: the MDM server received it byte for byte, its"
            . ' headers as sent');
    is($res->{headers}{'x-standin-request'}, $up[$before]{id},
        "$what: the answer is that of the MDM server");
    is($res->{body}, '', "$what: with its body, empty");
    return $res;
}

my $authenticate = sub {
    authenticate(udid => $_[0], product => 'iPhone15,2',
        serial => 'PHONESERIAL1', model_name => 'iPhone')
};

# an Authenticate and a TokenUpdate the MDM server accepts

{
    my $what = 'an unsigned Authenticate the MDM server accepts';
    my $t0 = time;
    passes($what, $authenticate->(udid(1)));
    record_ok($what, udid(1), identity => '', identity_source => 'none',
        message => 'Authenticate', since => $t0);

    $what = 'an unsigned TokenUpdate the MDM server accepts';
    $t0 = time;
    passes($what, token_update(udid => udid(2)));
    record_ok($what, udid(2), identity => '', identity_source => 'none',
        message => 'TokenUpdate', since => $t0);

    $what = 'a TokenUpdate signed with Mdm-Signature';
    $t0 = time;
    passes($what, token_update(udid => $phone), signer => 'phone');
    record_ok($what, $phone, identity => $identity{phone},
        identity_source => 'mdm-signature', message => 'TokenUpdate',
        since => $t0);
    like($identity{phone}, qr/^[0-9a-f]{64}$/,
        'the identity is the lower-case hex SHA-256 of the DER of the'
        . ' signer certificate');

    $what = 'a TokenUpdate of a lower-case UDID';
    my $mixed = udid(0xab);
    passes($what, token_update(udid => lc $mixed));
    record_ok($what, $mixed, identity => '', identity_source => 'none',
        message => 'TokenUpdate');
    is_deeply([$t->redis_keys('mdm_watch:device:' . lc $mixed)], [],
        "$what: no record under the lower-case UDID");
}

# check-ins the MDM server refuses

for my $case (
    ['an Authenticate the MDM server answers 403', 403, 11,
        $authenticate],
    ['a TokenUpdate the MDM server answers 410', 410, 12,
        sub { token_update(udid => $_[0]) }],
    ['a TokenUpdate the MDM server answers 500', 500, 13,
        sub { token_update(udid => $_[0]) }],
    ['a signed TokenUpdate the MDM server answers 401', 401, 14,
        sub { token_update(udid => $_[0]) }, 'phone'],
) {
    my ($what, $status, $n, $make, $signer) = @$case;
    records_nothing($what, sub {
        passes($what, $make->(udid($n)), status => $status,
            signer => $signer);
    });
    is_deeply($t->device_record(udid($n)), {}, "$what: no record");
}

# messages the module does not record

for my $case (
    ['a DeclarativeManagement check-in',
        checkin(MessageType => 'DeclarativeManagement', UDID => udid(21),
            Endpoint => 'tokens', Data => \'{}')],
    ['a command result', command_result(udid => udid(22))],
    ['a UserAuthenticate', checkin(MessageType => 'UserAuthenticate',
        UDID => udid(23), UserID => 'u1')],
    ['a TokenUpdate of the user channel, without UDID',
        checkin(MessageType => 'TokenUpdate', EnrollmentUserID => 'u1',
            Token => \"\x01\x02", PushMagic => 'magic')],
) {
    my ($what, $body) = @$case;
    records_nothing($what, sub { passes($what, $body, signer => 'phone') });
}

{
    my $what = 'a TokenUpdate sent to a location without mdm_watch_checkin';
    records_nothing($what, sub {
        my $res = $t->request(method => 'PUT', uri => '/mdm/server',
            headers => [['Content-Type', $CHECKIN_TYPE]],
            body => token_update(udid => udid(24)));
        is($res->{status}, 200, "$what is answered by the MDM server");
    });
}

# Mdm-Signature that does not verify: passed on, not recorded

sub garbage { encode_base64(MdmWatch::Test::random_bytes(900), '') }

{
    my ($dev, $changed) = (udid(31), udid(32));
    my $body = token_update(udid => $dev);
    (my $tampered = $body) =~ s/<string>\Q$dev\E</<string>$changed</
        or die 'no UDID in the TokenUpdate';

    for my $case (
        ['a TokenUpdate with a garbage Mdm-Signature', $body, garbage()],
        ['a TokenUpdate whose Mdm-Signature is no base64', $body,
            '*** not base64 ***'],
        ['a TokenUpdate changed after it was signed', $tampered,
            $t->mdm_signature($body, 'phone')],
        ['a TokenUpdate signed by a key its certificate does not hold',
            $body, $t->mdm_signature($body, 'phone',
                certificate => 'other_phone')],
        ['a TokenUpdate whose Mdm-Signature carries no certificate', $body,
            $t->mdm_signature($body, 'phone', nocerts => 1)],
        ['an Authenticate with a garbage Mdm-Signature',
            $authenticate->($dev), garbage()],
    ) {
        my ($what, $sent, $signature) = @$case;
        my $mark = $t->log_mark;
        records_nothing($what,
            sub { passes($what, $sent, signature => $signature) });
        $t->log_like(qr/\[warn\][^\n]*signature/i,
            "$what: the error log warns about the signature", $mark);
    }
}

# one device, enrolled again: a TokenUpdate of another identity changes
# nothing, an Authenticate replaces the record

{
    my $dev = udid(40);
    my $what = 'an Authenticate signed by the phone';
    passes($what, $authenticate->($dev), signer => 'phone');
    record_ok($what, $dev, identity => $identity{phone},
        identity_source => 'mdm-signature', message => 'Authenticate');

    $what = 'then a TokenUpdate signed by the same phone';
    passes($what, token_update(udid => $dev), signer => 'phone');
    my $record = record_ok($what, $dev, identity => $identity{phone},
        identity_source => 'mdm-signature', message => 'TokenUpdate');

    $what = 'then a TokenUpdate signed by another device';
    my $mark = $t->log_mark;
    records_nothing($what, sub {
        passes($what, token_update(udid => $dev), signer => 'other_phone');
    });
    $t->log_like(qr/\[warn\][^\n]*\Q$dev\E/,
        "$what: the error log warns, naming the device", $mark);

    $what = 'then an unsigned TokenUpdate';
    records_nothing($what,
        sub { passes($what, token_update(udid => $dev)) });

    $what = 'then a TokenUpdate with a garbage Mdm-Signature';
    records_nothing($what, sub {
        passes($what, token_update(udid => $dev), signature => garbage());
    });

    $what = 'then a TokenUpdate by another device that the MDM server'
        . ' refuses';
    records_nothing($what, sub {
        passes($what, token_update(udid => $dev), signer => 'other_phone',
            status => 403);
    });
    is_deeply($t->device_record($dev), $record,
        'after all three, the record is the one of the TokenUpdate of the'
        . ' phone');

    $what = 'then an Authenticate signed by another device';
    passes($what, $authenticate->($dev), signer => 'other_phone');
    record_ok($what, $dev, identity => $identity{other_phone},
        identity_source => 'mdm-signature', message => 'Authenticate');

    $what = 'then an Authenticate the MDM server refuses';
    records_nothing($what, sub {
        passes($what, $authenticate->($dev), signer => 'phone',
            status => 403);
    });

    $what = 'then an unsigned Authenticate';
    passes($what, $authenticate->($dev));
    record_ok($what, $dev, identity => '', identity_source => 'none',
        message => 'Authenticate');

    $what = 'then, with no identity on record, a signed TokenUpdate';
    passes($what, token_update(udid => $dev), signer => 'phone');
    record_ok($what, $dev, identity => $identity{phone},
        identity_source => 'mdm-signature', message => 'TokenUpdate');
}

# the TLS client certificate nginx verified is the identity of an
# unsigned check-in

{
    my $what = 'an unsigned TokenUpdate over TLS with a client certificate';
    passes($what, token_update(udid => udid(51)), tls => $tls,
        client => 'phone');
    record_ok($what, udid(51), identity => $identity{phone},
        identity_source => 'tls-client-certificate',
        message => 'TokenUpdate');

    $what = 'a TokenUpdate over TLS without a client certificate';
    passes($what, token_update(udid => udid(52)), tls => $tls);
    record_ok($what, udid(52), identity => '', identity_source => 'none',
        message => 'TokenUpdate');

    $what = 'a signed Authenticate over TLS with the client certificate of'
        . ' another device';
    passes($what, $authenticate->(udid(53)), tls => $tls,
        client => 'other_phone', signer => 'phone');
    record_ok($what, udid(53), identity => $identity{phone},
        identity_source => 'mdm-signature', message => 'Authenticate');

    $what = 'an unsigned TokenUpdate over TLS with a client certificate'
        . ' nginx did not verify (optional_no_ca)';
    passes($what, token_update(udid => udid(54)), tls => $tls_no_ca,
        client => 'watch');
    record_ok($what, udid(54), identity => '', identity_source => 'none',
        message => 'TokenUpdate');

    $what = 'an unsigned TokenUpdate over TLS with a client certificate'
        . ' nginx verified, where unverified ones are let in';
    passes($what, token_update(udid => udid(55)), tls => $tls_no_ca,
        client => 'phone');
    record_ok($what, udid(55), identity => $identity{phone},
        identity_source => 'tls-client-certificate',
        message => 'TokenUpdate');
}

# Redis failing while the module records: the check-in is answered as
# the MDM server answers, at once, and the failure is only logged

{
    my $what = 'with Redis stopped, a TokenUpdate';
    $t->stop_redis;
    my $mark = $t->log_mark;
    my $res = passes($what, token_update(udid => udid(61)),
        signer => 'phone');
    cmp_ok($res->{elapsed}, '<', MdmWatch::Test::slow(0.5),
        "$what: is answered at once");
    $t->log_like(qr/\[error\][^\n]*redis/i,
        "$what: the error log says Redis failed", $mark);

    $t->start_redis;
    my $deadline = time + MdmWatch::Test::slow(7);
    my $recorded;
    while (!$recorded && time < $deadline) {
        $t->checkin(token_update(udid => udid(62)));
        $recorded = $t->wait_device(udid(62), undef, 0.3);
    }
    ok($recorded, 'with Redis started again, the module records again');

    $what = 'with Redis stalled, a TokenUpdate';
    $t->pause_redis;
    $res = passes($what, token_update(udid => udid(63)),
        signer => 'phone');
    cmp_ok($res->{elapsed}, '<', MdmWatch::Test::slow(0.5),
        "$what: is answered at once, not after mdm_watch_redis_timeout");
    my $other = $t->request(uri => '/mdm/server', timeout => 3);
    is($other->{status}, 200, "$what: other locations answer meanwhile");
    sleep 1.5;
    $t->resume_redis;

    $deadline = time + MdmWatch::Test::slow(7);
    $recorded = undef;
    while (!$recorded && time < $deadline) {
        $t->checkin(token_update(udid => udid(64)));
        $recorded = $t->wait_device(udid(64), undef, 0.3);
    }
    ok($recorded, 'with Redis resumed, the module records again');
}

$t->finish;
